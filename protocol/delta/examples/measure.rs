//! Compare candidate delta-update schemes on real firmware builds (issue 19): for each pair of
//! signed images (the one a device runs, the one it should run next), the patch size as a share
//! of the full image for a bsdiff-style diff compressed with heatshrink (several windows), LZ4
//! and deflate, and the same compressors on the full image without a diff; the RAM each
//! decompressor needs on the device; and the time to generate the patch. Every patch is applied
//! back and compared with the target, so no figure comes from a patch that does not rebuild it.
//!
//! ```text
//! cargo run --release -p fota-delta --example measure -- NAME=BASE.bin:TARGET.bin ...
//! ```
//!
//! `scripts/delta-bench` builds the reference application at two versions for both slots,
//! signs them and runs this over the pairs that matter.
//!
//! Each pair also goes through the format the device applies, `fota_delta::generate` (the
//! container: header, bsdiff, heatshrink w10 l5), timed: generation (which applies the patch
//! back once to check it) and a separate application with `PatchApplier` in 1 KB segments.

use anyhow::{bail, ensure, Context};
use heatshrink::decoder::HeatshrinkDecoder;
use heatshrink::encoder::HeatshrinkEncoder;
use heatshrink::{Finish, Poll};
use std::time::Instant;

/// A compressor of the patch (or of the image): name, compress, decompress, device RAM.
struct Codec {
    name: &'static str,
    compress: fn(&[u8]) -> anyhow::Result<Vec<u8>>,
    decompress: fn(&[u8], usize) -> anyhow::Result<Vec<u8>>,
    /// What the decompressor holds in RAM while streaming, in bytes (its window and buffers;
    /// `None`: it cannot stream in bounded RAM).
    ram: Option<usize>,
    ram_note: &'static str,
}

fn hs_compress<const W: usize, const L: usize, const BUF: usize>(
    src: &[u8],
) -> anyhow::Result<Vec<u8>> {
    let mut enc = HeatshrinkEncoder::<W, L, BUF>::new();
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    let mut at = 0;
    loop {
        if at < src.len() {
            if let Ok(n) = enc.sink(&src[at..]) {
                at += n;
            }
        } else if enc.finish() == Finish::Done {
            return Ok(out);
        }
        loop {
            match enc.poll(&mut buf) {
                Ok(Poll::More(n)) => out.extend_from_slice(&buf[..n]),
                Ok(Poll::Empty(n)) => {
                    out.extend_from_slice(&buf[..n]);
                    break;
                }
                Err(e) => bail!("heatshrink encoder: {e:?}"),
            }
        }
    }
}

fn hs_decompress<const W: usize, const L: usize, const I: usize, const WIN: usize>(
    src: &[u8],
    len: usize,
) -> anyhow::Result<Vec<u8>> {
    let mut dec = HeatshrinkDecoder::<W, L, I, WIN>::new();
    let mut out = Vec::with_capacity(len);
    let mut buf = [0u8; 1024];
    let mut at = 0;
    loop {
        if at < src.len() {
            if let Ok(n) = dec.sink(&src[at..]) {
                at += n;
            }
        }
        loop {
            match dec.poll(&mut buf) {
                Ok(Poll::More(n)) => out.extend_from_slice(&buf[..n]),
                Ok(Poll::Empty(n)) => {
                    out.extend_from_slice(&buf[..n]);
                    break;
                }
                Err(e) => bail!("heatshrink decoder: {e:?}"),
            }
        }
        if at == src.len() && dec.finish() == Finish::Done {
            return Ok(out);
        }
    }
}

fn lz4_compress(src: &[u8]) -> anyhow::Result<Vec<u8>> {
    Ok(lz4_flex::block::compress(src))
}

fn lz4_decompress(src: &[u8], len: usize) -> anyhow::Result<Vec<u8>> {
    lz4_flex::block::decompress(src, len).context("lz4")
}

fn deflate_compress(src: &[u8]) -> anyhow::Result<Vec<u8>> {
    Ok(miniz_oxide::deflate::compress_to_vec(src, 10))
}

fn deflate_decompress(src: &[u8], _len: usize) -> anyhow::Result<Vec<u8>> {
    miniz_oxide::inflate::decompress_to_vec(src).map_err(|e| anyhow::anyhow!("inflate: {e:?}"))
}

fn codecs() -> Vec<Codec> {
    vec![
        Codec {
            name: "heatshrink w8 l4",
            compress: hs_compress::<8, 4, 512>,
            decompress: hs_decompress::<8, 4, 64, 256>,
            ram: Some(256 + 64 + 16),
            ram_note: "256 B window + 64 B input",
        },
        Codec {
            name: "heatshrink w10 l5",
            compress: hs_compress::<10, 5, 2048>,
            decompress: hs_decompress::<10, 5, 64, 1024>,
            ram: Some(1024 + 64 + 16),
            ram_note: "1 KB window + 64 B input",
        },
        Codec {
            name: "heatshrink w12 l6",
            compress: hs_compress::<12, 6, 8192>,
            decompress: hs_decompress::<12, 6, 64, 4096>,
            ram: Some(4096 + 64 + 16),
            ram_note: "4 KB window + 64 B input",
        },
        Codec {
            name: "lz4 block",
            compress: lz4_compress,
            decompress: lz4_decompress,
            ram: None,
            ram_note: "the whole output (or a 64 KB window)",
        },
        Codec {
            name: "deflate (level 10)",
            compress: deflate_compress,
            decompress: deflate_decompress,
            ram: Some(32 * 1024 + 11 * 1024),
            ram_note: "32 KB window + ~11 KB inflate state",
        },
    ]
}

/// One measured row.
struct Row {
    scheme: String,
    bytes: usize,
    ram: String,
}

/// The container the device applies: its size, the generation time and the application time.
struct Container {
    bytes: usize,
    generate_ms: f64,
    apply_ms: f64,
    /// Power cuts swept, each resumed to the exact target.
    cuts: usize,
}

/// Feed `patch` in 1 KB segments to `applier`, appending the target to `out`.
fn feed_all(
    applier: &mut fota_delta::PatchApplier,
    base: &[u8],
    patch: &[u8],
    out: &mut Vec<u8>,
) -> anyhow::Result<()> {
    let mut b = base;
    for segment in patch.chunks(1024) {
        applier
            .feed(segment, &mut b, &mut |x: &[u8]| -> Result<(), ()> {
                out.extend_from_slice(x);
                Ok(())
            })
            .map_err(|e| anyhow::anyhow!("apply: {e}"))?;
    }
    Ok(())
}

/// A power cut after `cut` bytes of the patch, with a checkpoint there: resume from the record
/// alone and finish; the target must come out exact.
fn power_cut(base: &[u8], target: &[u8], patch: &[u8], cut: usize) -> anyhow::Result<()> {
    let mut slot = Vec::with_capacity(target.len());
    let mut applier = fota_delta::PatchApplier::new(u32::MAX);
    feed_all(&mut applier, base, &patch[..cut], &mut slot)?;
    let mut record = [0u8; fota_delta::CHECKPOINT_LEN];
    applier.checkpoint(&mut record);
    let mut resumed = fota_delta::PatchApplier::resume(&record)
        .map_err(|e| anyhow::anyhow!("resume at {cut}: {e}"))?;
    slot.truncate(resumed.written() as usize);
    let from = resumed.offset() as usize;
    feed_all(&mut resumed, base, &patch[from..], &mut slot)?;
    resumed
        .finish::<std::convert::Infallible, ()>()
        .map_err(|e| anyhow::anyhow!("finish after a cut at {cut}: {e}"))?;
    ensure!(
        slot == target,
        "a power cut at {cut} does not rebuild the target"
    );
    Ok(())
}

fn container(base: &[u8], target: &[u8]) -> anyhow::Result<Container> {
    let started = Instant::now();
    let patch = fota_delta::generate(base, target).context("generate")?;
    let generate_ms = started.elapsed().as_secs_f64() * 1000.0;
    let started = Instant::now();
    let mut applier = fota_delta::PatchApplier::new(u32::MAX);
    let mut rebuilt = Vec::with_capacity(target.len());
    let mut b = base;
    for segment in patch.chunks(1024) {
        applier
            .feed(segment, &mut b, &mut |out: &[u8]| -> Result<(), ()> {
                rebuilt.extend_from_slice(out);
                Ok(())
            })
            .map_err(|e| anyhow::anyhow!("apply: {e}"))?;
    }
    applier
        .finish::<std::convert::Infallible, ()>()
        .map_err(|e| anyhow::anyhow!("apply: {e}"))?;
    let apply_ms = started.elapsed().as_secs_f64() * 1000.0;
    ensure!(
        rebuilt == target,
        "the container does not rebuild the target"
    );
    let mut cuts = 0;
    for cut in (0..=patch.len()).step_by(257) {
        power_cut(base, target, &patch, cut)?;
        cuts += 1;
    }
    Ok(Container {
        bytes: patch.len(),
        generate_ms,
        apply_ms,
        cuts,
    })
}

fn measure(base: &[u8], target: &[u8]) -> anyhow::Result<(Vec<Row>, f64)> {
    let started = Instant::now();
    let mut raw = Vec::new();
    bsdiff::diff(base, target, &mut raw).context("bsdiff")?;
    let diff_ms = started.elapsed().as_secs_f64() * 1000.0;
    let mut rebuilt = Vec::with_capacity(target.len());
    bsdiff::patch(base, &mut raw.as_slice(), &mut rebuilt).context("bspatch")?;
    ensure!(
        rebuilt == target,
        "the raw patch does not rebuild the target"
    );
    let mut rows = vec![Row {
        scheme: "bsdiff, uncompressed".into(),
        bytes: raw.len(),
        ram: "-".into(),
    }];
    for codec in codecs() {
        let packed = (codec.compress)(&raw)?;
        let unpacked = (codec.decompress)(&packed, raw.len())?;
        ensure!(
            unpacked == raw,
            "{} does not round-trip the patch",
            codec.name
        );
        rows.push(Row {
            scheme: format!("bsdiff + {}", codec.name),
            bytes: packed.len(),
            ram: ram_text(&codec),
        });
    }
    for codec in codecs() {
        let packed = (codec.compress)(target)?;
        let unpacked = (codec.decompress)(&packed, target.len())?;
        ensure!(
            unpacked == target,
            "{} does not round-trip the image",
            codec.name
        );
        rows.push(Row {
            scheme: format!("no diff, {} of the image", codec.name),
            bytes: packed.len(),
            ram: ram_text(&codec),
        });
    }
    Ok((rows, diff_ms))
}

fn ram_text(codec: &Codec) -> String {
    match codec.ram {
        Some(b) => format!("{b} ({})", codec.ram_note),
        None => format!("unbounded ({})", codec.ram_note),
    }
}

fn main() -> anyhow::Result<()> {
    let pairs: Vec<String> = std::env::args().skip(1).collect();
    if pairs.is_empty() {
        bail!("usage: measure NAME=BASE.bin:TARGET.bin ...");
    }
    for pair in &pairs {
        let (name, files) = pair
            .split_once('=')
            .with_context(|| format!("{pair}: expected NAME=BASE:TARGET"))?;
        let (base_path, target_path) = files
            .split_once(':')
            .with_context(|| format!("{pair}: expected NAME=BASE:TARGET"))?;
        let base = std::fs::read(base_path).with_context(|| format!("cannot read {base_path}"))?;
        let target =
            std::fs::read(target_path).with_context(|| format!("cannot read {target_path}"))?;
        let (rows, diff_ms) = measure(&base, &target)?;
        let packed = container(&base, &target)?;
        println!(
            "\n### {name}: base {} bytes, target {} bytes, diff generated in {diff_ms:.0} ms\n",
            base.len(),
            target.len()
        );
        println!(
            "fota-delta container: {} bytes ({:.1}%), generated in {:.0} ms (with its check), \
             applied in {:.0} ms (host, release); a power cut at {} offsets (every 257th \
             byte), each resumed from its checkpoint record to the exact target\n",
            group(packed.bytes),
            packed.bytes as f64 * 100.0 / target.len() as f64,
            packed.generate_ms,
            packed.apply_ms,
            packed.cuts
        );
        println!("| scheme | bytes | % of the full image | decoder RAM, bytes |");
        println!("|---|---|---|---|");
        println!("| full image | {} | 100.0% | - |", group(target.len()));
        for row in rows {
            println!(
                "| {} | {} | {:.1}% | {} |",
                row.scheme,
                group(row.bytes),
                row.bytes as f64 * 100.0 / target.len() as f64,
                row.ram
            );
        }
    }
    Ok(())
}

/// 12345 -> "12,345".
fn group(n: usize) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}
