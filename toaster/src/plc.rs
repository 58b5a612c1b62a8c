//! `toaster plc-eval` and `toaster conceal`: measure the concealment methods
//! on real instrument audio, and conceal anyone's WAV with a loss mask.
//!
//! Metrics, all on the concealed (lost) samples only:
//! * **SNR** (dB): lost-sample energy over error energy, per clip.
//!   Rewards phase-correct prediction; silence scores exactly 0 dB.
//! * **LSD** (dB): log-spectral distance per lost packet (Hann window,
//!   512-point FFT, 60 dB floor below the reference's peak bin), averaged.
//!   Rewards the right spectrum regardless of phase; silence scores badly.
//! * **fwSNRseg** (dB): frequency-weighted segmental SNR (Hu & Loizou 2008)
//!   on 25 critical bands, band weight = reference band magnitude^0.2,
//!   per-band SNR clipped to [-10, 35] dB. Chosen as the perceptual measure
//!   because it compares *magnitudes* per critical band (phase-blind like the
//!   ear for short segments), weights loud bands more (unlike LSD, which
//!   counts an inaudible band as much as the melody), correlated best with
//!   listener ratings among the simple objective measures in that study, and
//!   needs no licensed or external tool (PEAQ/ViSQOL are not in the
//!   registries here).

use anyhow::{anyhow, bail, Context, Result};
use bridge_core::conceal::{ConcealMethod, Concealer};
use bridge_core::pnbtr::core::{
    self as pcore, PnbtrModel, PnbtrScratch, HISTORY, N_CAND, N_STATIC, N_TIME, N_WEIGHTS,
};
use bridge_core::pnbtr::{fade_gain, make_concealer, PredictiveConcealer, Predictor, MAX_GAP};
use rand::{Rng, SeedableRng};
use rustfft::num_complex::Complex32;
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Instant;

const RATE: u32 = 48_000;
const FFT_LEN: usize = 512;

/// Arguments of `toaster plc-eval`.
#[derive(clap::Args, Debug)]
pub struct EvalArgs {
    /// The CI subset: 6 instruments + speech, 4 s each, 128/240-sample
    /// packets, 10% Gilbert-Elliott bursty loss.
    #[arg(long)]
    quick: bool,
    /// Print the results as JSON instead of a table.
    #[arg(long)]
    json: bool,
    /// Write a PNG: a waveform with concealed regions and the metric table.
    #[arg(long)]
    plot: Option<PathBuf>,
    /// Corpus directory (with eval/ and train/); generated with
    /// scripts/corpus/make_corpus.py if missing.
    #[arg(long)]
    corpus: Option<PathBuf>,
    /// Exit 1 unless PNBTR beats zero, repeat and Burg on music SNR, and every
    /// baseline (Opus included when built) on music LSD under 10 % bursty loss
    /// at 128 and 240 samples.
    #[arg(long)]
    check: bool,
    /// Also run pnbtr-gpu (slow on lavapipe; the result equals pnbtr's).
    #[arg(long)]
    gpu: bool,
    /// Measure the GPU path: streams per dispatch × 128 samples vs median ms,
    /// GPU against CPU, then exit.
    #[arg(long)]
    gpu_bench: bool,
    /// Fit PNBTR's mixing weights on the corpus's train/ half, write them here.
    #[arg(long)]
    train_out: Option<PathBuf>,
}

/// Arguments of `toaster conceal`.
#[derive(clap::Args, Debug)]
pub struct ConcealArgs {
    /// zero, repeat, burg, pnbtr, pnbtr-gpu (and opus when built with it).
    #[arg(long)]
    method: String,
    /// Packet length in frames (samples per channel).
    #[arg(long)]
    packet: usize,
    /// One 0/1 per packet, one per line (1 = lost). Missing lines = received.
    #[arg(long)]
    loss_mask: PathBuf,
    /// Input WAV (any rate, channels; 8/16/24/32-bit int or 32-bit float).
    #[arg(long = "in")]
    input: PathBuf,
    /// Output WAV, same length, rate, channels and sample format.
    #[arg(long = "out")]
    output: PathBuf,
}

// ---------------------------------------------------------------- audio I/O

struct Wav {
    spec: hound::WavSpec,
    /// Interleaved, full scale ±1.
    samples: Vec<f32>,
}

fn read_wav(path: &Path) -> Result<Wav> {
    let mut r =
        hound::WavReader::open(path).with_context(|| format!("opening {}", path.display()))?;
    let spec = r.spec();
    let samples: Vec<f32> = match spec.sample_format {
        hound::SampleFormat::Float => r.samples::<f32>().collect::<Result<_, _>>()?,
        hound::SampleFormat::Int => {
            if spec.bits_per_sample == 0 || spec.bits_per_sample > 32 {
                bail!("unsupported bit depth {}", spec.bits_per_sample);
            }
            let scale = 1.0 / (1u64 << (spec.bits_per_sample - 1)) as f32;
            r.samples::<i32>()
                .map(|s| s.map(|v| v as f32 * scale))
                .collect::<Result<_, _>>()?
        }
    };
    if spec.channels == 0 {
        bail!("WAV with zero channels");
    }
    Ok(Wav { spec, samples })
}

fn write_wav(path: &Path, spec: hound::WavSpec, samples: &[f32]) -> Result<()> {
    let mut w = hound::WavWriter::create(path, spec)
        .with_context(|| format!("creating {}", path.display()))?;
    match spec.sample_format {
        hound::SampleFormat::Float => {
            for &s in samples {
                w.write_sample(s)?;
            }
        }
        hound::SampleFormat::Int => {
            let full = (1u64 << (spec.bits_per_sample - 1)) as f64;
            for &s in samples {
                let v = (s as f64 * full).round().clamp(-full, full - 1.0) as i32;
                w.write_sample(v)?;
            }
        }
    }
    w.finalize()?;
    Ok(())
}

/// Mono mix at 48 kHz (windowed-sinc resampling if needed).
fn load_mono_48k(path: &Path, max_seconds: f64) -> Result<Vec<f32>> {
    let wav = read_wav(path)?;
    let ch = wav.spec.channels as usize;
    let mono: Vec<f32> = wav
        .samples
        .chunks(ch)
        .map(|f| f.iter().sum::<f32>() / ch as f32)
        .collect();
    let mut x = if wav.spec.sample_rate == RATE {
        mono
    } else {
        resample(&mono, wav.spec.sample_rate, RATE)
    };
    x.truncate((max_seconds * RATE as f64) as usize);
    Ok(x)
}

fn resample(x: &[f32], from: u32, to: u32) -> Vec<f32> {
    const TAPS: i64 = 24;
    let ratio = from as f64 / to as f64;
    let cutoff = (to as f64 / from as f64).min(1.0);
    let n_out = (x.len() as f64 / ratio) as usize;
    (0..n_out)
        .map(|n| {
            let t = n as f64 * ratio;
            let c = t.floor() as i64;
            let mut acc = 0.0f64;
            for k in c - TAPS + 1..=c + TAPS {
                if k < 0 || k as usize >= x.len() {
                    continue;
                }
                let d = t - k as f64;
                let arg = std::f64::consts::PI * d * cutoff;
                let sinc = if arg.abs() < 1e-9 {
                    1.0
                } else {
                    arg.sin() / arg
                };
                let win = 0.5 + 0.5 * (std::f64::consts::PI * d / TAPS as f64).cos();
                acc += x[k as usize] as f64 * sinc * cutoff * win;
            }
            acc as f32
        })
        .collect()
}

// ---------------------------------------------------------------- loss traces

#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
enum Trace {
    /// Independent loss with this probability.
    Iid(f64),
    /// Gilbert-Elliott: average loss, mean burst length in packets.
    Gilbert(f64, f64),
}

impl Trace {
    fn label(&self) -> String {
        match self {
            Trace::Iid(p) => format!("iid {:.0}%", p * 100.0),
            Trace::Gilbert(p, b) => format!("GE {:.0}% burst {b:.0}", p * 100.0),
        }
    }

    /// One bool per packet (true = lost). The first 2048 samples are never
    /// lost so every method starts with a full history.
    fn mask(&self, packets: usize, packet: usize, seed: u64) -> Vec<bool> {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let warm = HISTORY.div_ceil(packet);
        let mut bad = false;
        (0..packets)
            .map(|i| {
                let lost = match *self {
                    Trace::Iid(p) => rng.random_bool(p),
                    Trace::Gilbert(p, burst) => {
                        let r = 1.0 / burst;
                        let g2b = p * r / (1.0 - p);
                        bad = if bad {
                            !rng.random_bool(r)
                        } else {
                            rng.random_bool(g2b)
                        };
                        bad
                    }
                };
                lost && i >= warm
            })
            .collect()
    }
}

fn seed_of(parts: &[&str]) -> u64 {
    // FNV-1a: a stable seed from the condition's names.
    let mut h = 0xcbf2_9ce4_8422_2325u64;
    for p in parts {
        for b in p.bytes() {
            h ^= b as u64;
            h = h.wrapping_mul(0x100_0000_01b3);
        }
        h ^= 0xff;
    }
    h
}

// ---------------------------------------------------------------- running methods

/// Which packet of a gap a timing is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PacketKind {
    /// The first lost packet of a gap (the predictor analyses the history).
    Start,
    /// A later lost packet of the same gap.
    Continue,
    /// The first received packet after a gap (it cross-fades out of the
    /// prediction).
    End,
}

/// Cost of one concealer call on a packet that conceals: wall time and the
/// calling thread's CPU time (µs). Wall time also counts time the thread
/// was descheduled (a loaded machine preempts it for milliseconds); CPU time
/// is what the call itself costs the core, which is what the issue's
/// "CPU ≤ 10 % of the packet's duration" is about.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Timing {
    pub wall_us: f64,
    pub cpu_us: f64,
    pub kind: PacketKind,
}

/// The calling thread's CPU time in µs (`CLOCK_THREAD_CPUTIME_ID`).
pub(crate) fn thread_cpu_us() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `clock_gettime` writes one `timespec` through the pointer,
    // which points at a live, properly aligned local.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    if rc != 0 {
        return 0.0;
    }
    ts.tv_sec as f64 * 1e6 + ts.tv_nsec as f64 * 1e-3
}

/// Times `f` (wall and thread CPU).
pub(crate) fn timed(kind: PacketKind, f: impl FnOnce()) -> Timing {
    let c0 = thread_cpu_us();
    let t = Instant::now();
    f();
    let wall_us = t.elapsed().as_secs_f64() * 1e6;
    Timing {
        wall_us,
        cpu_us: thread_cpu_us() - c0,
        kind,
    }
}

/// Runs a concealer over mono `x` in packets of `n`; returns the output and
/// the timing of each call that conceals: every lost packet's `conceal()`
/// and the `on_received()` that ends a gap (it cross-fades).
fn run_concealer(
    c: &mut dyn Concealer,
    x: &[f32],
    n: usize,
    mask: &[bool],
) -> (Vec<f32>, Vec<Timing>) {
    let mut y = x.to_vec();
    let mut times = Vec::new();
    let mut prev_lost = false;
    for (blk, &lost) in y.chunks_mut(n).zip(mask) {
        if lost {
            blk.fill(0.0);
            let kind = if prev_lost {
                PacketKind::Continue
            } else {
                PacketKind::Start
            };
            times.push(timed(kind, || c.conceal(blk)));
        } else if prev_lost {
            times.push(timed(PacketKind::End, || c.on_received(blk)));
        } else {
            c.on_received(blk);
        }
        prev_lost = lost;
    }
    (y, times)
}

#[cfg(feature = "opus")]
mod opus_plc {
    //! Opus PLC baseline: libopus CELT (restricted low delay) at the frame
    //! size nearest the packet; a frame is lost when it overlaps a lost
    //! packet (after aligning for the codec's look-ahead).
    use anyhow::{anyhow, Result};

    pub const FRAMES: [usize; 4] = [120, 240, 480, 960];

    pub fn frame_for(packet: usize, rate: u32) -> usize {
        let scale = rate as usize / 400; // 2.5 ms
        let sizes = FRAMES.map(|f| f / 120 * scale);
        *sizes
            .iter()
            .min_by_key(|&&f| (f as i64 - packet as i64).abs())
            .unwrap()
    }

    fn channels(ch: usize) -> Result<opus::Channels> {
        match ch {
            1 => Ok(opus::Channels::Mono),
            2 => Ok(opus::Channels::Stereo),
            _ => Err(anyhow!("opus: only mono or stereo, not {ch} channels")),
        }
    }

    /// Encodes `x` (interleaved), loses the frames overlapping lost samples,
    /// decodes with PLC. Returns the aligned output and µs per PLC call.
    pub fn run(
        x: &[f32],
        ch: usize,
        rate: u32,
        packet: usize,
        lost_packet: &[bool],
    ) -> Result<(Vec<f32>, Vec<super::Timing>)> {
        let frame = frame_for(packet, rate);
        let chans = channels(ch)?;
        let mut enc = opus::Encoder::new(rate, chans, opus::Application::LowDelay)?;
        enc.set_bitrate(opus::Bitrate::Bits(96_000 * ch as i32))?;
        // As a network app would: tell the encoder to expect loss (CELT then
        // leans less on inter-frame energy prediction and recovers faster).
        enc.set_packet_loss_perc(10)?;
        let look = enc.get_lookahead()? as usize;
        let mut dec = opus::Decoder::new(rate, chans)?;
        let frames_in = x.len() / ch;
        let n_frames = (frames_in + look).div_ceil(frame);
        let mut padded = x.to_vec();
        padded.resize(n_frames * frame * ch, 0.0);
        let lost_at = |s: usize| -> bool { lost_packet.get(s / packet).copied().unwrap_or(false) };
        let mut out = vec![0.0f32; n_frames * frame * ch];
        let mut pkt = vec![0u8; 4000];
        let mut times = Vec::new();
        let mut prev_lost = false;
        for k in 0..n_frames {
            let len = enc.encode_float(&padded[k * frame * ch..(k + 1) * frame * ch], &mut pkt)?;
            // Decoded frame k holds input samples [k*frame - look, (k+1)*frame - look).
            let lo = (k * frame).saturating_sub(look);
            let hi = ((k + 1) * frame).saturating_sub(look).min(frames_in);
            let lost = (lo..hi).any(lost_at);
            let o = &mut out[k * frame * ch..(k + 1) * frame * ch];
            if lost {
                let kind = if prev_lost {
                    super::PacketKind::Continue
                } else {
                    super::PacketKind::Start
                };
                let mut r = Ok(0);
                times.push(super::timed(kind, || r = dec.decode_float(&[], o, false)));
                r?;
            } else {
                dec.decode_float(&pkt[..len], o, false)?;
            }
            prev_lost = lost;
        }
        let mut aligned = out[look * ch..].to_vec();
        aligned.truncate(x.len());
        aligned.resize(x.len(), 0.0);
        Ok((aligned, times))
    }
}

fn parse_method(s: &str) -> Result<Option<ConcealMethod>> {
    Ok(Some(match s {
        "zero" => ConcealMethod::Zero,
        "repeat" => ConcealMethod::Repeat,
        "burg" => ConcealMethod::Burg,
        "pnbtr" => ConcealMethod::Pnbtr,
        "pnbtr-gpu" => ConcealMethod::PnbtrGpu,
        "opus" if cfg!(feature = "opus") => return Ok(None),
        "opus" => bail!("this toaster was built without the `opus` feature"),
        other => bail!("unknown method {other:?} (zero, repeat, burg, pnbtr, pnbtr-gpu, opus)"),
    }))
}

// ---------------------------------------------------------------- metrics

struct Spectra {
    fft: Arc<dyn rustfft::Fft<f32>>,
    window: Vec<Vec<f32>>,
    buf: Vec<Complex32>,
    bands: Vec<(usize, usize)>,
}

impl Spectra {
    fn new() -> Self {
        let fft = rustfft::FftPlanner::new().plan_fft_forward(FFT_LEN);
        // Critical-band edges (Hz), Zwicker, up to Nyquist.
        let edges = [
            0.0, 100.0, 200.0, 300.0, 400.0, 510.0, 630.0, 770.0, 920.0, 1080.0, 1270.0, 1480.0,
            1720.0, 2000.0, 2320.0, 2700.0, 3150.0, 3700.0, 4400.0, 5300.0, 6400.0, 7700.0, 9500.0,
            12000.0, 15500.0, 20000.0, 24000.0,
        ];
        let hz = RATE as f64 / FFT_LEN as f64;
        let mut bands = Vec::new();
        for w in edges.windows(2) {
            let lo = ((w[0] / hz).ceil() as usize).max(1);
            let hi = ((w[1] / hz).ceil() as usize).min(FFT_LEN / 2);
            if hi > lo {
                bands.push((lo, hi));
            }
        }
        Self {
            fft,
            window: vec![Vec::new(); FFT_LEN + 1],
            buf: vec![Complex32::default(); FFT_LEN],
            bands,
        }
    }

    fn power(&mut self, x: &[f32], out: &mut [f32]) {
        let n = x.len().min(FFT_LEN);
        if self.window[n].is_empty() {
            self.window[n] = (0..n)
                .map(|i| {
                    0.5 - 0.5 * (2.0 * std::f32::consts::PI * (i as f32 + 0.5) / n as f32).cos()
                })
                .collect();
        }
        for (i, b) in self.buf.iter_mut().enumerate() {
            *b = Complex32::new(if i < n { x[i] * self.window[n][i] } else { 0.0 }, 0.0);
        }
        self.fft.process(&mut self.buf);
        for (o, b) in out.iter_mut().zip(&self.buf) {
            *o = b.norm_sqr();
        }
    }

    /// (LSD dB, fwSNRseg dB) of one packet.
    fn packet_metrics(&mut self, r: &[f32], y: &[f32]) -> (f64, f64) {
        let mut pr = vec![0.0f32; FFT_LEN];
        let mut py = vec![0.0f32; FFT_LEN];
        self.power(r, &mut pr);
        self.power(y, &mut py);
        let half = FFT_LEN / 2;
        let peak = pr[1..=half].iter().fold(0.0f32, |m, &v| m.max(v)) as f64;
        let floor = peak * 1e-6 + 1e-20;
        let mut acc = 0.0f64;
        for k in 1..=half {
            let d = 10.0 * ((pr[k] as f64 + floor).log10() - (py[k] as f64 + floor).log10());
            acc += d * d;
        }
        let lsd = (acc / half as f64).sqrt();
        let (mut num, mut den) = (0.0f64, 0.0f64);
        for &(lo, hi) in &self.bands {
            let er: f64 = pr[lo..hi].iter().map(|&v| v as f64).sum();
            let ey: f64 = py[lo..hi].iter().map(|&v| v as f64).sum();
            let (mr, my) = (er.sqrt(), ey.sqrt());
            let w = mr.powf(0.2);
            let snr = (10.0 * (er / ((mr - my).powi(2) + 1e-20)).log10()).clamp(-10.0, 35.0);
            num += w * snr;
            den += w;
        }
        (lsd, if den > 0.0 { num / den } else { 0.0 })
    }
}

#[derive(Debug, Clone, Copy, Default, Serialize)]
struct Metrics {
    snr_db: f64,
    lsd_db: f64,
    fwsnr_db: f64,
    lsd_packet_db: f64,
    lost_packets: usize,
}

/// Hop of the sliding analysis frames (FFT_LEN samples, Hann).
const FRAME_HOP: usize = FFT_LEN / 4;

/// Metrics of `y` against `x` around the lost packets of `mask` (packet `n`).
///
/// * SNR: over the lost samples only.
/// * LSD and fwSNRseg: over sliding [`FFT_LEN`]-sample Hann frames (hop
///   [`FRAME_HOP`]) that overlap a lost sample, so a frame sees the
///   transitions into and out of a concealed region and any splice inside
///   it. Frames are placed independently of the packet grid: one frame per
///   lost packet, aligned to it (`lsd_packet_db`, kept for comparison with
///   earlier figures) never sees a discontinuity on a packet boundary, and
///   scores block repetition, which splices on every boundary, as if it were
///   seamless (docs/plc.md, "Why sliding frames").
/// * Frames (and packets) whose reference is below -70 dBFS RMS are skipped.
fn metrics(spec: &mut Spectra, x: &[f32], y: &[f32], n: usize, mask: &[bool]) -> Metrics {
    let silent = |r: &[f32]| {
        let e: f64 = r.iter().map(|&v| (v as f64).powi(2)).sum();
        (e / r.len().max(1) as f64).sqrt() <= 10f64.powf(-70.0 / 20.0)
    };
    let (mut es, mut ee) = (0.0f64, 0.0f64);
    let (mut lsd_pkt, mut counted_pkt) = (0.0f64, 0usize);
    let mut lost = 0;
    // lost_before[i]: lost samples in x[..i].
    let mut lost_before = vec![0u32; x.len() + 1];
    for i in 0..x.len() {
        let l = mask.get(i / n).copied().unwrap_or(false);
        lost_before[i + 1] = lost_before[i] + l as u32;
    }
    for (p, &l) in mask.iter().enumerate() {
        if !l {
            continue;
        }
        let (a, b) = (p * n, ((p + 1) * n).min(x.len()));
        if a >= b {
            continue;
        }
        lost += 1;
        let (r, t) = (&x[a..b], &y[a..b]);
        es += r.iter().map(|&v| (v as f64).powi(2)).sum::<f64>();
        ee += r
            .iter()
            .zip(t)
            .map(|(&u, &v)| (u as f64 - v as f64).powi(2))
            .sum::<f64>();
        if !silent(r) {
            for (rc, tc) in r.chunks(FFT_LEN).zip(t.chunks(FFT_LEN)) {
                lsd_pkt += spec.packet_metrics(rc, tc).0;
                counted_pkt += 1;
            }
        }
    }
    let (mut lsd, mut fw, mut counted) = (0.0f64, 0.0f64, 0usize);
    let mut a = 0;
    while a + FFT_LEN <= x.len() {
        let b = a + FFT_LEN;
        if lost_before[b] > lost_before[a] && !silent(&x[a..b]) {
            let (l1, f1) = spec.packet_metrics(&x[a..b], &y[a..b]);
            lsd += l1;
            fw += f1;
            counted += 1;
        }
        a += FRAME_HOP;
    }
    let c = counted.max(1) as f64;
    Metrics {
        snr_db: 10.0 * (es / ee.max(1e-30)).log10(),
        lsd_db: lsd / c,
        fwsnr_db: fw / c,
        lsd_packet_db: lsd_pkt / counted_pkt.max(1) as f64,
        lost_packets: lost,
    }
}

fn median(v: &mut [f64]) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn percentile(v: &mut [f64], p: f64) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    v[((v.len() - 1) as f64 * p).round() as usize]
}

// ---------------------------------------------------------------- corpus

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn ensure_corpus(dir: &Path, quick: bool, need_train: bool) -> Result<()> {
    let ok = dir.join("eval").is_dir() && (!need_train || dir.join("train").is_dir());
    if ok {
        return Ok(());
    }
    let script = repo_root().join("scripts/corpus/make_corpus.py");
    eprintln!("plc-eval: generating corpus in {} ...", dir.display());
    let mut cmd = std::process::Command::new("python3");
    cmd.arg(&script).arg(dir);
    if quick && !need_train {
        cmd.arg("--quick");
    }
    let st = cmd
        .status()
        .with_context(|| format!("running {}", script.display()))?;
    if !st.success() {
        bail!("corpus generation failed ({st}); needs fluidsynth, fluid-soundfont-gm, espeak-ng");
    }
    Ok(())
}

struct Clip {
    name: String,
    category: &'static str,
    x: Vec<f32>,
}

fn load_set(dir: &Path, max_seconds: f64) -> Result<Vec<Clip>> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "wav"))
        .collect();
    paths.sort();
    if paths.is_empty() {
        bail!("no WAV files in {}", dir.display());
    }
    paths
        .iter()
        .map(|p| {
            let name = p.file_stem().unwrap().to_string_lossy().to_string();
            let category = if name.starts_with("speech") {
                "speech"
            } else {
                "music"
            };
            Ok(Clip {
                x: load_mono_48k(p, max_seconds)?,
                name,
                category,
            })
        })
        .collect()
}

// ---------------------------------------------------------------- evaluation

#[derive(Debug, Clone, Serialize)]
struct Row {
    method: String,
    category: String,
    packet: usize,
    trace: String,
    clips: usize,
    snr_db: f64,
    /// Log-spectral distance over sliding frames overlapping lost samples, dB.
    lsd_db: f64,
    fwsnr_db: f64,
    /// Log-spectral distance with one frame per lost packet, aligned to it
    /// (blind to splices on packet boundaries; for comparison only), dB.
    lsd_packet_db: f64,
    lost_packets: usize,
    /// Thread CPU time of a gap-starting conceal() call (the predictor's
    /// analysis runs there), median, µs.
    cpu_us_gap_start_median: f64,
    /// 99th percentile of the same.
    cpu_us_gap_start_p99: f64,
    /// Thread CPU time per concealing packet (every lost packet and the
    /// cross-fading first packet after a gap): median, µs.
    cpu_us_packet_median: f64,
    /// The same, 99th percentile.
    cpu_us_packet_p99: f64,
    /// The same, worst packet.
    cpu_us_packet_max: f64,
    /// Mean thread CPU time per lost packet (gap starts and continuations), µs.
    cpu_us_per_lost_packet_mean: f64,
    /// Wall time of a gap start, median, µs (includes preemption on a
    /// loaded machine).
    wall_us_gap_start_median: f64,
    /// The same, 99th percentile.
    wall_us_gap_start_p99: f64,
    /// Worst packets against the budget: p99 of the per-packet CPU time as a
    /// fraction of the packet's duration (the target: ≤ 0.10).
    cpu_fraction_p99: f64,
    /// Median packet's CPU time as a fraction of the packet's duration.
    cpu_fraction_median: f64,
}

#[derive(Debug, Serialize)]
struct Report {
    quick: bool,
    build: &'static str,
    methods: Vec<String>,
    rows: Vec<Row>,
    checks: Vec<Check>,
    targets: Vec<Check>,
}

#[derive(Debug, Clone, Serialize)]
struct Check {
    what: String,
    pass: bool,
}

const BUILD: &str = if cfg!(debug_assertions) {
    "debug"
} else {
    "release"
};

fn method_list(gpu: bool) -> Vec<String> {
    let mut m: Vec<String> = ["zero", "repeat", "burg", "pnbtr"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    if gpu {
        m.push("pnbtr-gpu".into());
    }
    if cfg!(feature = "opus") {
        m.push("opus".into());
    }
    m
}

/// Output of one method on one clip/condition.
fn run_method(method: &str, x: &[f32], n: usize, mask: &[bool]) -> Result<(Vec<f32>, Vec<Timing>)> {
    match parse_method(method)? {
        Some(m) => {
            let mut c = make_concealer(m, 1, RATE)?;
            Ok(run_concealer(c.as_mut(), x, n, mask))
        }
        None => {
            #[cfg(feature = "opus")]
            {
                opus_plc::run(x, 1, RATE, n, mask)
            }
            #[cfg(not(feature = "opus"))]
            {
                Err(anyhow!("opus not built"))
            }
        }
    }
}

pub fn run_eval(args: EvalArgs) -> Result<ExitCode> {
    if args.gpu_bench {
        return gpu_bench(args.json);
    }
    let corpus = args.corpus.clone().unwrap_or_else(|| {
        repo_root()
            .join("target")
            .join(if args.quick && args.train_out.is_none() {
                "plc-corpus-quick"
            } else {
                "plc-corpus"
            })
    });
    ensure_corpus(&corpus, args.quick, args.train_out.is_some())?;
    if let Some(out) = &args.train_out {
        return train(&corpus, out);
    }
    let (packets, traces, seconds): (Vec<usize>, Vec<Trace>, f64) = if args.quick {
        (vec![128, 240], vec![Trace::Gilbert(0.10, 3.0)], 4.0)
    } else {
        (
            vec![64, 128, 240, 256, 512],
            vec![
                Trace::Iid(0.02),
                Trace::Iid(0.05),
                Trace::Iid(0.10),
                Trace::Iid(0.20),
                Trace::Gilbert(0.10, 3.0),
            ],
            10.0,
        )
    };
    let clips = load_set(&corpus.join("eval"), seconds)?;
    let mut methods = method_list(args.gpu);
    if args.gpu {
        if let Err(e) = make_concealer(ConcealMethod::PnbtrGpu, 1, RATE) {
            eprintln!("plc-eval: skipping pnbtr-gpu: {e}");
            methods.retain(|m| m != "pnbtr-gpu");
        }
    }
    let mut spectra = Spectra::new();
    let mut rows = Vec::new();
    for &n in &packets {
        for tr in &traces {
            for method in &methods {
                for category in ["music", "speech"] {
                    let (mut snr, mut lsd, mut fw, mut lost, mut count) = (0.0, 0.0, 0.0, 0, 0);
                    let mut lsd_pkt = 0.0;
                    let mut times = Vec::new();
                    for clip in clips.iter().filter(|c| c.category == category) {
                        let mask = tr.mask(
                            clip.x.len().div_ceil(n),
                            n,
                            seed_of(&[&clip.name, &n.to_string(), &tr.label()]),
                        );
                        let (y, t) = run_method(method, &clip.x, n, &mask)?;
                        let m = metrics(&mut spectra, &clip.x, &y, n, &mask);
                        snr += m.snr_db;
                        lsd += m.lsd_db;
                        fw += m.fwsnr_db;
                        lsd_pkt += m.lsd_packet_db;
                        lost += m.lost_packets;
                        count += 1;
                        times.extend(t);
                    }
                    if count == 0 {
                        continue;
                    }
                    let c = count as f64;
                    let pick = |f: &dyn Fn(&Timing) -> Option<f64>| -> Vec<f64> {
                        times.iter().filter_map(f).collect()
                    };
                    let is_start = |t: &Timing| t.kind == PacketKind::Start;
                    let mut starts = pick(&|t| is_start(t).then_some(t.cpu_us));
                    let mut wall_starts = pick(&|t| is_start(t).then_some(t.wall_us));
                    let mut packets = pick(&|t| Some(t.cpu_us));
                    let lost_cpu = pick(&|t| (t.kind != PacketKind::End).then_some(t.cpu_us));
                    let mean = lost_cpu.iter().sum::<f64>() / lost_cpu.len().max(1) as f64;
                    let packet_us = n as f64 / RATE as f64 * 1e6;
                    let p99 = percentile(&mut packets, 0.99);
                    let med = median(&mut packets);
                    rows.push(Row {
                        method: method.clone(),
                        category: category.into(),
                        packet: n,
                        trace: tr.label(),
                        clips: count,
                        snr_db: snr / c,
                        lsd_db: lsd / c,
                        fwsnr_db: fw / c,
                        lsd_packet_db: lsd_pkt / c,
                        lost_packets: lost,
                        cpu_us_gap_start_median: median(&mut starts),
                        cpu_us_gap_start_p99: percentile(&mut starts, 0.99),
                        cpu_us_packet_median: med,
                        cpu_us_packet_p99: p99,
                        cpu_us_packet_max: packets.iter().fold(0.0, |m: f64, &v| m.max(v)),
                        cpu_us_per_lost_packet_mean: mean,
                        wall_us_gap_start_median: median(&mut wall_starts),
                        wall_us_gap_start_p99: percentile(&mut wall_starts, 0.99),
                        cpu_fraction_p99: p99 / packet_us,
                        cpu_fraction_median: med / packet_us,
                    });
                }
            }
        }
    }
    let (checks, targets) = judge(&rows, &packets, &traces);
    let report = Report {
        quick: args.quick,
        build: BUILD,
        methods,
        rows,
        checks,
        targets,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_table(&report);
    }
    if let Some(png) = &args.plot {
        plot(png, &clips, &report)?;
        eprintln!("plc-eval: wrote {}", png.display());
    }
    if args.check && !report.checks.iter().all(|c| c.pass) {
        eprintln!("plc-eval: CHECK FAILED: PNBTR does not beat every baseline (see checks)");
        return Ok(ExitCode::from(1));
    }
    Ok(ExitCode::SUCCESS)
}

fn find<'a>(rows: &'a [Row], method: &str, n: usize, trace: &str) -> Option<&'a Row> {
    rows.iter()
        .find(|r| r.method == method && r.category == "music" && r.packet == n && r.trace == trace)
}

fn judge(rows: &[Row], packets: &[usize], traces: &[Trace]) -> (Vec<Check>, Vec<Check>) {
    let mut checks = Vec::new();
    let mut targets = Vec::new();
    for &n in packets {
        for tr in traces {
            let label = tr.label();
            let Some(p) = find(rows, "pnbtr", n, &label) else {
                continue;
            };
            for base in ["zero", "repeat", "burg"] {
                if let Some(b) = find(rows, base, n, &label) {
                    checks.push(Check {
                        what: format!(
                            "music {n} {label}: pnbtr SNR {:.2} > {base} {:.2}",
                            p.snr_db, b.snr_db
                        ),
                        pass: p.snr_db > b.snr_db,
                    });
                }
            }
            // LSD on sliding frames (see `metrics`). Burg's continuation is
            // spectrally right for a few ms, so it wins LSD on isolated short
            // gaps (iid loss, 64/128 packets: docs/plc.md); the checks hold
            // PNBTR to every baseline on the target conditions.
            let is_target = matches!(tr, Trace::Gilbert(..)) && (n == 128 || n == 240);
            for base in ["zero", "repeat", "burg", "opus"] {
                if let Some(b) = find(rows, base, n, &label).filter(|_| is_target || base == "zero")
                {
                    checks.push(Check {
                        what: format!(
                            "music {n} {label}: pnbtr LSD {:.2} < {base} {:.2}",
                            p.lsd_db, b.lsd_db
                        ),
                        pass: p.lsd_db < b.lsd_db,
                    });
                }
            }
            if is_target {
                if let Some(b) = find(rows, "burg", n, &label) {
                    targets.push(Check {
                        what: format!(
                            "music {n} {label}: pnbtr SNR {:.2} >= burg {:.2} + 1 dB",
                            p.snr_db, b.snr_db
                        ),
                        pass: p.snr_db >= b.snr_db + 1.0,
                    });
                }
                targets.push(Check {
                    what: format!("music {n} {label}: pnbtr SNR {:.2} > 0 dB", p.snr_db),
                    pass: p.snr_db > 0.0,
                });
                for base in ["zero", "repeat", "burg", "opus"] {
                    if let Some(b) = find(rows, base, n, &label) {
                        targets.push(Check {
                            what: format!(
                                "music {n} {label}: pnbtr LSD {:.2} < {base} {:.2}",
                                p.lsd_db, b.lsd_db
                            ),
                            pass: p.lsd_db < b.lsd_db,
                        });
                    }
                }
                targets.push(Check {
                    what: format!(
                        "music {n} {label}: pnbtr CPU per packet (thread CPU time, p99 over concealing packets) {:.1} us = {:.1}% of the packet; median {:.1} us ({BUILD} build)",
                        p.cpu_us_packet_p99,
                        100.0 * p.cpu_fraction_p99,
                        p.cpu_us_packet_median
                    ),
                    pass: p.cpu_fraction_p99 <= 0.10,
                });
            }
        }
    }
    (checks, targets)
}

fn print_table(r: &Report) {
    println!(
        "plc-eval ({} build{}): SNR on concealed samples, LSD and fwSNR on 512-sample frames overlapping them; mean over clips",
        r.build,
        if r.quick { ", quick set" } else { "" }
    );
    let mut cond: Vec<(usize, String)> = Vec::new();
    for row in &r.rows {
        if !cond.contains(&(row.packet, row.trace.clone())) {
            cond.push((row.packet, row.trace.clone()));
        }
    }
    for (n, tr) in cond {
        println!(
            "\n== packet {n} samples ({:.2} ms), {tr} ==",
            n as f64 / 48.0
        );
        println!(
            "{:<10} | {:>8} {:>8} {:>8} | {:>8} {:>8} {:>8} | {:>8} {:>8} {:>8} {:>7}",
            "method", "SNR", "LSD", "fwSNR", "SNR", "LSD", "fwSNR", "p50", "p99", "max", "p99 %"
        );
        println!(
            "{:<10} | {:^26} | {:^26} | {:^35}",
            "", "music (dB)", "speech (dB)", "CPU per concealing packet (us)"
        );
        for m in &r.methods {
            let get = |c: &str| {
                r.rows
                    .iter()
                    .find(|x| &x.method == m && x.category == c && x.packet == n && x.trace == tr)
            };
            let (mu, sp) = (get("music"), get("speech"));
            let f = |x: Option<&Row>| {
                x.map_or("        -        -        -".to_string(), |x| {
                    format!("{:>8.2} {:>8.2} {:>8.2}", x.snr_db, x.lsd_db, x.fwsnr_db)
                })
            };
            let cpu = mu.map_or(String::new(), |x| {
                format!(
                    "{:>8.1} {:>8.1} {:>8.1} {:>6.2}%",
                    x.cpu_us_packet_median,
                    x.cpu_us_packet_p99,
                    x.cpu_us_packet_max,
                    100.0 * x.cpu_fraction_p99
                )
            });
            println!("{:<10} | {} | {} | {}", m, f(mu), f(sp), cpu);
        }
    }
    println!("\nchecks (PNBTR beats zero, repeat, Burg on music SNR; every baseline on LSD, bursty 128/240):");
    for c in &r.checks {
        println!("  [{}] {}", if c.pass { "pass" } else { "FAIL" }, c.what);
    }
    println!("issue targets (music, GE bursty 10%, 128/240):");
    for c in &r.targets {
        println!("  [{}] {}", if c.pass { "met " } else { "MISS" }, c.what);
    }
}

// ---------------------------------------------------------------- plot

fn plot(path: &Path, clips: &[Clip], report: &Report) -> Result<()> {
    use plotters::prelude::*;
    let font_path = [
        "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
        "/usr/share/fonts/TTF/DejaVuSans.ttf",
    ]
    .iter()
    .find(|p| Path::new(p).exists())
    .ok_or_else(|| anyhow!("--plot needs the DejaVu font (apt-get install fonts-dejavu-core)"))?;
    let bytes: &'static [u8] = Box::leak(std::fs::read(font_path)?.into_boxed_slice());
    plotters::style::register_font("sans-serif", FontStyle::Normal, bytes)
        .map_err(|_| anyhow!("bad font {font_path}"))?;

    let clip = clips
        .iter()
        .find(|c| c.name == "piano")
        .or_else(|| clips.first())
        .ok_or_else(|| anyhow!("no clips"))?;
    let n = 128;
    let tr = Trace::Gilbert(0.10, 3.0);
    let mask = tr.mask(
        clip.x.len().div_ceil(n),
        n,
        seed_of(&[&clip.name, &n.to_string(), &tr.label()]),
    );
    // Window: 40 ms around the first burst of 2+ lost packets after 1 s.
    let start_pkt = (RATE as usize / n..mask.len().saturating_sub(1))
        .find(|&p| mask[p] && mask[p + 1])
        .unwrap_or(RATE as usize / n);
    let w0 = (start_pkt * n).saturating_sub(600);
    let w1 = (w0 + 1920).min(clip.x.len());
    let mut curves = vec![("original", clip.x.clone(), RGBColor(90, 90, 90))];
    for (m, col) in [
        ("burg", RGBColor(200, 40, 40)),
        ("opus", RGBColor(30, 150, 30)),
        ("pnbtr", RGBColor(20, 60, 220)),
    ] {
        if report.methods.iter().any(|x| x == m) {
            curves.push((m, run_method(m, &clip.x, n, &mask)?.0, col));
        }
    }
    let root = BitMapBackend::new(path, (1400, 1000)).into_drawing_area();
    root.fill(&WHITE)?;
    let (top, bottom) = root.split_vertically(560);
    let peak = clip.x[w0..w1].iter().fold(0.05f32, |m, v| m.max(v.abs())) * 1.3;
    let mut chart = ChartBuilder::on(&top)
        .caption(
            format!(
                "{} ({}), packet {n}, {}: concealed regions shaded",
                clip.name,
                clip.category,
                tr.label()
            ),
            ("sans-serif", 24),
        )
        .margin(10)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(w0 as f32 / 48.0..w1 as f32 / 48.0, -peak..peak)?;
    chart
        .configure_mesh()
        .x_desc("time (ms)")
        .y_desc("amplitude")
        .label_style(("sans-serif", 14))
        .draw()?;
    for (p, &l) in mask.iter().enumerate() {
        let (a, b) = (p * n, (p + 1) * n);
        if l && b > w0 && a < w1 {
            chart.draw_series(std::iter::once(Rectangle::new(
                [
                    (a.max(w0) as f32 / 48.0, -peak),
                    (b.min(w1) as f32 / 48.0, peak),
                ],
                RGBColor(255, 230, 150).filled(),
            )))?;
        }
    }
    // The original everywhere; each method only where it concealed.
    for (name, y, col) in &curves {
        let lost_here = |i: usize| *name == "original" || mask[i / n];
        let mut first = true;
        let mut i = w0;
        while i < w1 {
            if !lost_here(i) {
                i += 1;
                continue;
            }
            let s0 = i;
            while i < w1 && lost_here(i) {
                i += 1;
            }
            let width = if *name == "original" { 2 } else { 3 };
            let series = chart.draw_series(LineSeries::new(
                (s0..i).map(|k| (k as f32 / 48.0, y[k])),
                col.stroke_width(width),
            ))?;
            if first {
                series.label(*name).legend(move |(x, yy)| {
                    PathElement::new(vec![(x, yy), (x + 20, yy)], col.stroke_width(3))
                });
                first = false;
            }
        }
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .label_font(("sans-serif", 16))
        .draw()?;
    // Metric table.
    let mono_path = font_path.replace("DejaVuSans.ttf", "DejaVuSansMono.ttf");
    if let Ok(m) = std::fs::read(&mono_path) {
        let mono: &'static [u8] = Box::leak(m.into_boxed_slice());
        plotters::style::register_font("monospace", FontStyle::Normal, mono)
            .map_err(|_| anyhow!("bad font {mono_path}"))?;
    } else {
        plotters::style::register_font("monospace", FontStyle::Normal, bytes)
            .map_err(|_| anyhow!("bad font {font_path}"))?;
    }
    let style = ("sans-serif", 17).into_font().color(&BLACK);
    let mut y = 10;
    bottom.draw_text(
        "music, mean over clips: SNR on concealed samples, LSD / fwSNRseg on 512-sample frames overlapping them (dB); CPU per concealing packet (p99)",
        &style,
        (20, y),
    )?;
    y += 28;
    let mut conds: Vec<(usize, String)> = Vec::new();
    for r in &report.rows {
        if (r.packet == 128 || r.packet == 240)
            && !conds.contains(&(r.packet, r.trace.clone()))
            && r.trace.starts_with("GE")
        {
            conds.push((r.packet, r.trace.clone()));
        }
    }
    for (pn, trl) in conds {
        bottom.draw_text(
            &format!("packet {pn}, {trl}"),
            &("sans-serif", 18).into_font().color(&BLACK),
            (20, y),
        )?;
        y += 26;
        for m in &report.methods {
            if let Some(r) = report.rows.iter().find(|r| {
                &r.method == m && r.category == "music" && r.packet == pn && r.trace == trl
            }) {
                let line = format!(
                    "{:<10}  SNR {:>7.2}   LSD {:>6.2}   fwSNR {:>6.2}   cpu p99 {:>8.1} us ({:.1}% of packet)",
                    m,
                    r.snr_db,
                    r.lsd_db,
                    r.fwsnr_db,
                    r.cpu_us_packet_p99,
                    100.0 * r.cpu_fraction_p99
                );
                bottom.draw_text(&line, &("monospace", 16).into_font().color(&BLACK), (40, y))?;
                y += 22;
            }
        }
        y += 8;
    }
    root.present()?;
    Ok(())
}

// ---------------------------------------------------------------- training

/// Per gap: the static features and the candidates over the gap.
type GapLog = Arc<Mutex<Vec<(Vec<f32>, Vec<[f32; N_CAND]>)>>>;

/// A PNBTR predictor that also records what it saw (features and the three
/// candidates over the whole gap) so the mixing weights can be fitted.
struct Recorder {
    model: PnbtrModel,
    scratch: PnbtrScratch,
    log: GapLog,
    /// The current gap's whole continuation (computed at the start).
    cont: Vec<f32>,
}

impl Predictor for Recorder {
    fn start(&mut self, _ch: usize, h: &[f32], _last: usize) {
        let an = pcore::predict(h, &self.model, &mut self.scratch, &mut self.cont);
        let mut c = vec![[0.0f32; N_CAND]; MAX_GAP];
        pcore::candidates(h, &an, &mut self.scratch, &mut c);
        self.log.lock().unwrap().push((an.features.to_vec(), c));
    }
    fn extend(&mut self, _ch: usize, _h: &[f32], from: usize, out: &mut [f32]) {
        out.copy_from_slice(&self.cont[from..from + out.len()]);
    }
    fn name(&self) -> &'static str {
        "pnbtr-train"
    }
}

fn train(corpus: &Path, out: &Path) -> Result<ExitCode> {
    let clips = load_set(&corpus.join("train"), 10.0)?;
    let conditions = [
        (128usize, Trace::Gilbert(0.10, 3.0)),
        (240, Trace::Gilbert(0.10, 3.0)),
        (128, Trace::Iid(0.10)),
        (512, Trace::Gilbert(0.10, 3.0)),
    ];
    let mut model = PnbtrModel::ar_only();
    for pass in 0..2 {
        let mut ata = vec![0.0f64; N_WEIGHTS * N_WEIGHTS];
        let mut atb = vec![0.0f64; N_WEIGHTS];
        let mut samples = 0usize;
        for clip in &clips {
            for (n, tr) in &conditions {
                let mask = tr.mask(
                    clip.x.len().div_ceil(*n),
                    *n,
                    seed_of(&["train", &clip.name, &n.to_string(), &tr.label()]),
                );
                let log = Arc::new(Mutex::new(Vec::new()));
                let rec = Recorder {
                    model: model.clone(),
                    scratch: PnbtrScratch::new(MAX_GAP),
                    log: log.clone(),
                    cont: vec![0.0; MAX_GAP],
                };
                let mut c = PredictiveConcealer::new(1, rec);
                run_concealer(&mut c, &clip.x, *n, &mask);
                let log = log.lock().unwrap();
                // Gap starts in order: the i-th run of lost packets.
                let mut gaps = Vec::new();
                let mut p = 0;
                while p < mask.len() {
                    if mask[p] {
                        let s = p;
                        while p < mask.len() && mask[p] {
                            p += 1;
                        }
                        gaps.push((s * n, ((p * n).min(clip.x.len())) - s * n));
                    } else {
                        p += 1;
                    }
                }
                anyhow::ensure!(
                    gaps.len() == log.len(),
                    "recorder saw {} gaps, mask has {}",
                    log.len(),
                    gaps.len()
                );
                let mut reg = [0.0f64; N_WEIGHTS];
                for ((start, len), (feat, cands)) in gaps.iter().zip(log.iter()) {
                    #[allow(clippy::needless_range_loop)] // t is also the gap position
                    for t in 0..(*len).min(MAX_GAP) {
                        let g = fade_gain(t) as f64;
                        let tf = pcore::time_features(t);
                        for k in 0..N_CAND {
                            for j in 0..N_STATIC {
                                for m in 0..N_TIME {
                                    reg[PnbtrModel::index(k, j, m)] =
                                        g * cands[t][k] as f64 * feat[j] as f64 * tf[m] as f64;
                                }
                            }
                        }
                        let target = clip.x[start + t] as f64;
                        for a in 0..N_WEIGHTS {
                            atb[a] += reg[a] * target;
                            for b in a..N_WEIGHTS {
                                ata[a * N_WEIGHTS + b] += reg[a] * reg[b];
                            }
                        }
                        samples += 1;
                    }
                }
            }
        }
        for a in 0..N_WEIGHTS {
            for b in 0..a {
                ata[a * N_WEIGHTS + b] = ata[b * N_WEIGHTS + a];
            }
        }
        let trace: f64 = (0..N_WEIGHTS).map(|i| ata[i * N_WEIGHTS + i]).sum();
        let ridge = 1e-4 * trace / N_WEIGHTS as f64;
        for i in 0..N_WEIGHTS {
            ata[i * N_WEIGHTS + i] += ridge;
        }
        let w = cholesky_solve(&ata, &atb, N_WEIGHTS)
            .ok_or_else(|| anyhow!("normal equations not positive definite"))?;
        model = PnbtrModel {
            weights: w.iter().map(|&v| v as f32).collect(),
            trained_on: format!(
                "least squares (ridge {ridge:.3e}) over {samples} lost samples of {} train/ clips, packets 128/240/512, GE 10% and iid 10%, pass {}",
                clips.len(),
                pass + 1
            ),
        };
        eprintln!("train pass {}: {samples} samples", pass + 1);
    }
    std::fs::write(out, serde_json::to_string_pretty(&model)? + "\n")?;
    eprintln!("wrote {}", out.display());
    Ok(ExitCode::SUCCESS)
}

fn cholesky_solve(a: &[f64], b: &[f64], n: usize) -> Option<Vec<f64>> {
    let mut l = vec![0.0f64; n * n];
    for i in 0..n {
        for j in 0..=i {
            let mut s = a[i * n + j];
            for k in 0..j {
                s -= l[i * n + k] * l[j * n + k];
            }
            if i == j {
                if s <= 0.0 {
                    return None;
                }
                l[i * n + i] = s.sqrt();
            } else {
                l[i * n + j] = s / l[j * n + j];
            }
        }
    }
    let mut y = vec![0.0; n];
    for i in 0..n {
        let mut s = b[i];
        for k in 0..i {
            s -= l[i * n + k] * y[k];
        }
        y[i] = s / l[i * n + i];
    }
    let mut x = vec![0.0; n];
    for i in (0..n).rev() {
        let mut s = y[i];
        for k in i + 1..n {
            s -= l[k * n + i] * x[k];
        }
        x[i] = s / l[i * n + i];
    }
    Some(x)
}

// ---------------------------------------------------------------- GPU bench

fn bench_histories(streams: usize) -> Vec<f32> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(42);
    let mut v = vec![0.0f32; streams * HISTORY];
    for s in 0..streams {
        let f0 = rng.random_range(60.0..1000.0f32);
        for i in 0..HISTORY {
            let t = i as f32 / RATE as f32;
            v[s * HISTORY + i] = (0..4)
                .map(|k| {
                    (2.0 * std::f32::consts::PI * f0 * (k + 1) as f32 * t).sin() / (k + 1) as f32
                })
                .sum::<f32>()
                * 0.3
                + 0.01 * rng.random_range(-1.0..1.0f32);
        }
    }
    v
}

fn time_median(mut f: impl FnMut() -> Result<()>) -> Result<f64> {
    f()?;
    f()?;
    let mut v = Vec::new();
    let start = Instant::now();
    while v.len() < 5 || (v.len() < 50 && start.elapsed().as_secs_f64() < 2.0) {
        let t = Instant::now();
        f()?;
        v.push(t.elapsed().as_secs_f64() * 1e3);
        if start.elapsed().as_secs_f64() > 30.0 {
            break;
        }
    }
    Ok(median(&mut v))
}

#[cfg(feature = "gpu")]
fn gpu_bench(json: bool) -> Result<ExitCode> {
    use bridge_core::pnbtr::gpu::GpuPnbtr;
    const LEN: usize = 128;
    let model = PnbtrModel::builtin();
    let mut gpu =
        GpuPnbtr::new(model.clone(), 1024, LEN).context("pnbtr-gpu needs a wgpu adapter")?;
    let mut rows = Vec::new();
    for streams in [1usize, 16, 64, 256, 1024] {
        let hist = bench_histories(streams);
        let mut out = vec![0.0f32; streams * LEN];
        let gpu_ms = time_median(|| gpu.predict_batch(&hist, LEN, &mut out).map_err(Into::into))?;
        let mut scratch = PnbtrScratch::new(LEN);
        let mut o = vec![0.0f32; LEN];
        let cpu_ms = time_median(|| {
            for h in hist.chunks(HISTORY) {
                pcore::predict(h, &model, &mut scratch, &mut o);
            }
            Ok(())
        })?;
        rows.push(serde_json::json!({"streams": streams, "samples": LEN, "gpu_ms_median": gpu_ms, "cpu_ms_median": cpu_ms}));
    }
    let adapter = gpu.adapter_name().to_string();
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(
                &serde_json::json!({"adapter": adapter, "build": BUILD, "rows": rows})
            )?
        );
    } else {
        println!(
            "pnbtr gpu-bench on {adapter} ({BUILD} build); CPU = one core, streams in sequence"
        );
        println!(
            "{:>8} {:>8} {:>14} {:>14} {:>10}",
            "streams", "samples", "gpu ms (p50)", "cpu ms (p50)", "cpu/gpu"
        );
        for r in &rows {
            let (g, c) = (
                r["gpu_ms_median"].as_f64().unwrap(),
                r["cpu_ms_median"].as_f64().unwrap(),
            );
            println!(
                "{:>8} {:>8} {:>14.3} {:>14.3} {:>10.2}",
                r["streams"].as_u64().unwrap_or(0),
                r["samples"].as_u64().unwrap_or(0),
                g,
                c,
                c / g
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(not(feature = "gpu"))]
fn gpu_bench(_json: bool) -> Result<ExitCode> {
    bail!("bridge-core was built without the `gpu` feature")
}

// ---------------------------------------------------------------- conceal

pub fn run_conceal(args: ConcealArgs) -> Result<ExitCode> {
    if args.packet == 0 {
        bail!("--packet must be at least 1");
    }
    let method = parse_method(&args.method)?;
    let wav = read_wav(&args.input)?;
    let ch = wav.spec.channels as usize;
    let text = std::fs::read_to_string(&args.loss_mask)
        .with_context(|| format!("reading {}", args.loss_mask.display()))?;
    let mut mask = Vec::new();
    for (i, line) in text.lines().enumerate() {
        match line.trim() {
            "" => {}
            "0" => mask.push(false),
            "1" => mask.push(true),
            other => bail!(
                "{}:{}: expected 0 or 1, found {other:?}",
                args.loss_mask.display(),
                i + 1
            ),
        }
    }
    let frames = wav.samples.len() / ch;
    let packets = frames.div_ceil(args.packet);
    mask.resize(packets, false);
    let mut x = wav.samples.clone();
    // Samples of lost packets are ignored: zero them so nothing can leak.
    for (p, &l) in mask.iter().enumerate() {
        if l {
            let a = p * args.packet * ch;
            let b = ((p + 1) * args.packet * ch).min(x.len());
            x[a..b].fill(0.0);
        }
    }
    let y = match method {
        Some(m) => {
            let mut c = make_concealer(m, ch, wav.spec.sample_rate)?;
            let mut y = x;
            for (blk, &l) in y.chunks_mut(args.packet * ch).zip(&mask) {
                if l {
                    c.conceal(blk);
                } else {
                    c.on_received(blk);
                }
            }
            y
        }
        None => {
            #[cfg(feature = "opus")]
            {
                if ![8000, 12000, 16000, 24000, 48000].contains(&wav.spec.sample_rate) {
                    bail!(
                        "opus supports 8/12/16/24/48 kHz, not {}",
                        wav.spec.sample_rate
                    );
                }
                opus_plc::run(&x, ch, wav.spec.sample_rate, args.packet, &mask)?.0
            }
            #[cfg(not(feature = "opus"))]
            {
                unreachable!("parse_method refuses opus without the feature")
            }
        }
    };
    write_wav(&args.output, wav.spec, &y)?;
    eprintln!(
        "conceal: {} packets of {} frames, {} lost, method {} -> {}",
        packets,
        args.packet,
        mask.iter().filter(|&&l| l).count(),
        args.method,
        args.output.display()
    );
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A chord with partials that are not harmonics of the packet rate, so a
    /// repetition of any cycle length is audibly spliced.
    fn chord(len: usize) -> Vec<f32> {
        (0..len)
            .map(|i| {
                let t = i as f32 / RATE as f32;
                [(220.0, 0.5), (331.0, 0.3), (517.0, 0.2), (1234.0, 0.1)]
                    .iter()
                    .map(|&(f, a)| a * (2.0 * std::f32::consts::PI * f * t).sin())
                    .sum()
            })
            .collect()
    }

    /// Conceals the lost packets by repeating the `cycle` samples before each
    /// gap (cycle = packet: "repeat last"; its splices fall on packet edges).
    fn cyclic(x: &[f32], n: usize, mask: &[bool], cycle: usize) -> Vec<f32> {
        let mut y = x.to_vec();
        let mut p = 0;
        while p < mask.len() {
            if !mask[p] {
                p += 1;
                continue;
            }
            let start = p * n;
            while p < mask.len() && mask[p] {
                p += 1;
            }
            for i in start..(p * n).min(y.len()) {
                y[i] = y[start - cycle + (i - start) % cycle];
            }
        }
        y
    }

    #[test]
    fn sliding_frames_see_splices_on_packet_edges_and_packet_frames_do_not() {
        let n = 128;
        let x = chord(48_000);
        let packets = x.len() / n;
        // Bursts of two lost packets every 20 packets, after a clean start.
        let mask: Vec<bool> = (0..packets).map(|p| p >= 20 && p % 20 < 2).collect();
        let mut spec = Spectra::new();

        let perfect = metrics(&mut spec, &x, &x, n, &mask);
        assert!(
            perfect.lsd_db < 1e-6 && perfect.lsd_packet_db < 1e-6,
            "{perfect:?}"
        );

        // The same kind of concealment, differing only in where the splices
        // fall: on the packet edges (cycle 128) or inside packets (cycle 165).
        let on_edges = metrics(&mut spec, &x, &cyclic(&x, n, &mask, 128), n, &mask);
        let inside = metrics(&mut spec, &x, &cyclic(&x, n, &mask, 165), n, &mask);
        // Printed for docs/plc.md (`cargo test -p toaster sliding_frames -- --nocapture`).
        eprintln!(
            "LSD packet frames: edges {:.1} dB, inside {:.1} dB; sliding frames: edges {:.1} dB, inside {:.1} dB",
            on_edges.lsd_packet_db, inside.lsd_packet_db, on_edges.lsd_db, inside.lsd_db
        );
        // Packet-aligned frames put the edge splices where the Hann window is
        // zero: they rate the two very differently.
        assert!(
            inside.lsd_packet_db > 2.0 * on_edges.lsd_packet_db,
            "packet frames: edges {on_edges:?} inside {inside:?}"
        );
        // Sliding frames see every splice: both clearly imperfect, rated alike.
        for m in [on_edges, inside] {
            assert!(m.lsd_db > 2.0, "{m:?}");
        }
        let ratio = inside.lsd_db / on_edges.lsd_db;
        assert!(
            (0.6..1.6).contains(&ratio),
            "sliding: edges {on_edges:?} inside {inside:?}"
        );
        // SNR is the same measure in both framings.
        assert!(on_edges.snr_db < 0.0 && inside.snr_db < 0.0);
    }
}
