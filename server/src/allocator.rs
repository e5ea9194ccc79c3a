//! The allocator of every process that links the server: `fota` (serve and demo), the
//! benchmarks and the tests, so what is measured is what ships.
//!
//! mimalloc, not glibc's malloc. A profile of `bench_reports` on SQLite (perf, session 32) put
//! about 17% of the process's CPU in glibc's allocator: `_int_malloc`, `malloc_consolidate`,
//! `_int_free` and waits on its arena locks, most of the consolidation from hyper's 8 KiB read
//! buffers (`BytesMut::reserve_inner` under `Buffered::poll_read_from_io`), which glibc serves
//! from the top chunk after merging fast bins. mimalloc's thread-local free lists take that
//! out; the same benchmark, alternated A/B on one machine, stores about 10% more reports a
//! second (docs/BENCHMARKS.md, "The allocator").
//!
//! It is a library's item on purpose: a binary that links `fota-server` cannot pick another
//! allocator by accident, and no benchmark measures a different one than `fota serve` runs.

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
