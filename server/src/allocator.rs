//! The allocator of every process that links the server: `fota` (serve and demo), the
//! benchmarks and the tests, so what is measured is what ships.
//!
//! mimalloc, not glibc's malloc. A profile of `bench_reports` on SQLite (perf, session 32) put
//! about 17% of the process's CPU in glibc's allocator: `_int_malloc`, `malloc_consolidate`,
//! `_int_free` and waits on its arena locks, most of the consolidation from hyper's 8 KiB read
//! buffers (`BytesMut::reserve_inner` under `Buffered::poll_read_from_io`), which glibc serves
//! from the top chunk after merging fast bins. mimalloc's thread-local free lists take that
//! out. Alternated A/B on one machine: report ingest about 9% faster on SQLite and 17% on
//! PostgreSQL, steady check-ins 15% and 29% (docs/BENCHMARKS.md, "mimalloc, for the server's
//! paths").
//!
//! It is the library's item on purpose: every binary that links `fota-server` runs on it (a
//! second `#[global_allocator]` would not link), so no benchmark or test measures another
//! allocator than the one `fota serve` runs.

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
