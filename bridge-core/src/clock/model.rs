//! The clock model: `remote = local × (1 + drift) + offset`, estimated from
//! timestamp pairs.
//!
//! # How it estimates
//!
//! Every exchange gives two one-way observations of `θ(t) = remote − local`:
//!
//! * forward (ping): `t2 − t1 = θ(t1) + d_fwd` with the forward delay `d_fwd ≥ 0`,
//! * backward (pong): `t3 − t4 = θ(t4) − d_bwd` with the backward delay `d_bwd ≥ 0`.
//!
//! Network delay is a fixed minimum plus queueing that is never negative, so
//! the forward points all lie *above* the line `θ(t) + d_fwd_min` and the
//! backward points all lie *below* `θ(t) − d_bwd_min`. The model takes the
//! lower convex hull of the forward points and the upper convex hull of the
//! backward points over a sliding window. The slope of each envelope across
//! the middle half of the window (its chord there; close to the
//! linear-programming skew estimator of Moon, Skelly and Towsley, which takes
//! the single hull edge over the mean time, but never read off a short edge)
//! is the drift, the two sides weighted by their uncertainty; the mean of the
//! two envelopes' supporting lines at that drift is the offset. One-way
//! stamps ([`ClockModel::add_stamp`]: any frame the remote stamped when it
//! built it) add backward points for the drift, not for the offset. Why
//! this and not least squares:
//!
//! * delay outliers (a packet stuck in a queue) sit far from the hull and are
//!   ignored, however large — no threshold to tune;
//! * short round trips are favoured automatically: only the fastest packets
//!   shape the hull, so 5 ± 2 ms of jitter costs tens of µs, not milliseconds;
//! * the drift comes out of the same fit (a regression over the window).
//!
//! What no two-way method can see is *asymmetry*: if the forward path is
//! slower than the backward one by `a`, the offset is off by `a / 2`. The
//! model reports that bound as [`ClockEstimate::uncertainty_ns`] (half the
//! smallest round trip).
//!
//! A clock *step* (someone set the remote clock, or a new master) shows up as
//! new points on the wrong side of a hull. One such point is an outlier and is
//! dropped; `step_confirm` of them in a row, each more than
//! `step_threshold_ns` off, restart the window from those points.
//!
//! One-sided observations (a DAW's `process()` call time against its sample
//! position; a GPU timestamp against the CPU clock) use
//! [`ClockModel::add_backward`]: then only the upper hull exists and the
//! offset includes the (unknowable, constant) minimum latency.

use std::collections::VecDeque;

/// Tuning of a [`ClockModel`].
///
/// Thread-safe: yes (plain value). Realtime-safe: yes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ClockModelConfig {
    /// Observations kept at most (sliding window; buffers are sized for it).
    pub window: usize,
    /// Observations older than this (local time before the newest) leave
    /// the window too, ns. With a fixed count alone, a faster exchange rate
    /// (an arbiter's start-up burst) would shorten the window's span, and the
    /// drift needs span: under 5 ± 2 ms of jitter, tens of seconds of fast
    /// round trips to reach 1 ppm (docs/sync.md, "Drift under jitter").
    pub window_ns: u64,
    /// Below this span of local time the drift is not estimated (the prior,
    /// normally the last estimate or 0, is used).
    pub min_drift_span_ns: u64,
    /// How far the true drift may be from the prior, ppm (1 σ). Above the
    /// minimum span, the fitted slope is shrunk towards the prior by its own
    /// uncertainty: `w = σp² / (σp² + σs²)` with `σs ≈ 4 × spread / (n × span)`
    /// (spread: mean distance of the points from their envelope). A clean
    /// path trusts the slope after a fraction of a second; a path with
    /// milliseconds of jitter only after a few seconds.
    pub prior_drift_sigma_ppm: f64,
    /// Drift estimates are clamped to ± this (crystals are within ±200 ppm).
    pub max_drift_ppm: f64,
    /// A point this far on the wrong side of the model is a step candidate.
    pub step_threshold_ns: u64,
    /// This many step candidates in a row restart the model.
    pub step_confirm: usize,
}

impl Default for ClockModelConfig {
    fn default() -> Self {
        Self {
            window: 1024,
            window_ns: u64::MAX,
            min_drift_span_ns: 200_000_000,
            prior_drift_sigma_ppm: 200.0,
            max_drift_ppm: 1000.0,
            step_threshold_ns: 2_000_000,
            step_confirm: 3,
        }
    }
}

/// One four-timestamp exchange: `t1`, `t4` on the local clock, `t2`, `t3` on
/// the remote clock, all ns.
///
/// Thread-safe: yes (plain value). Realtime-safe: yes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exchange {
    /// Request sent (local clock).
    pub t1: u64,
    /// Request received (remote clock).
    pub t2: u64,
    /// Reply sent (remote clock).
    pub t3: u64,
    /// Reply received (local clock).
    pub t4: u64,
}

impl Exchange {
    /// Round-trip delay minus the remote's processing time, ns (can be
    /// negative for inconsistent input, which [`ClockModel::add_exchange`] rejects).
    pub fn round_trip_ns(&self) -> i128 {
        (self.t4 as i128 - self.t1 as i128) - (self.t3 as i128 - self.t2 as i128)
    }

    /// The classic single-exchange offset estimate `remote − local`, ns.
    pub fn offset_ns(&self) -> i128 {
        ((self.t2 as i128 - self.t1 as i128) + (self.t3 as i128 - self.t4 as i128)) / 2
    }
}

/// Why an observation was not used.
///
/// Thread-safe: yes. Realtime-safe: yes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SampleError {
    /// `t4 < t1`.
    #[error("reply received before the request was sent (t4 < t1)")]
    LocalOrder,
    /// `t3 < t2`.
    #[error("reply sent before the request was received (t3 < t2)")]
    RemoteOrder,
    /// The remote's processing time exceeds the round trip.
    #[error("remote processing time exceeds the round trip")]
    NegativeDelay,
    /// Local time went backwards against the newest observation.
    #[error("observation is older than the newest one in the model")]
    NotMonotonic,
    /// The observation is more than `step_threshold_ns` on the wrong side of
    /// the model (an outlier or the first points of a clock step).
    #[error("observation contradicts the model (outlier or step candidate)")]
    Contradicts,
}

/// What adding an observation did.
///
/// Thread-safe: yes. Realtime-safe: yes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Added {
    /// Used.
    Used,
    /// The model restarted from the last `step_confirm` observations (a clock step).
    StepRestart,
}

/// The current estimate of a [`ClockModel`].
///
/// `remote(local) = ref_remote_ns + (local − ref_local_ns) × (1 + drift)`.
///
/// Thread-safe: yes (plain value). Realtime-safe: yes (no allocation in any method).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ClockEstimate {
    /// Reference instant, local clock, ns.
    pub ref_local_ns: u64,
    /// The remote clock at that instant, ns (may be negative for a remote
    /// clock behind zero).
    pub ref_remote_ns: i128,
    /// Rate of the remote clock relative to the local clock, minus 1.
    pub drift: f64,
    /// Bound on the offset error from delay asymmetry (half the smallest
    /// round trip) for two-sided models; the median distance of the points
    /// from the envelope for one-sided models. ns.
    pub uncertainty_ns: f64,
    /// 0–1 summary: `1 / (1 + uncertainty / 1 ms)`, scaled down while fewer
    /// than 8 observations are in the window.
    pub quality: f64,
    /// Observations in the window.
    pub observations: usize,
    /// Local time spanned by the window, ns.
    pub span_ns: u64,
}

impl ClockEstimate {
    /// The identity model (remote = local), quality 0.
    pub fn identity(local_ns: u64) -> Self {
        Self {
            ref_local_ns: local_ns,
            ref_remote_ns: local_ns as i128,
            drift: 0.0,
            uncertainty_ns: f64::INFINITY,
            quality: 0.0,
            observations: 0,
            span_ns: 0,
        }
    }

    /// Drift in ppm.
    pub fn drift_ppm(&self) -> f64 {
        self.drift * 1e6
    }

    /// `remote − local` at local time `local_ns`, ns.
    pub fn offset_at(&self, local_ns: u64) -> f64 {
        let dt = local_ns as i128 - self.ref_local_ns as i128;
        (self.ref_remote_ns - self.ref_local_ns as i128) as f64 + dt as f64 * self.drift
    }

    /// The remote clock at local time `local_ns`, ns (exact to 1 ns).
    pub fn to_remote_i128(&self, local_ns: u64) -> i128 {
        let dt = local_ns as i128 - self.ref_local_ns as i128;
        self.ref_remote_ns + dt + (dt as f64 * self.drift).round() as i128
    }

    /// The remote clock at local time `local_ns`, clamped to `u64`.
    pub fn to_remote(&self, local_ns: u64) -> u64 {
        clamp_u64(self.to_remote_i128(local_ns))
    }

    /// The local time at which the remote clock reads `remote_ns`, clamped to `u64`.
    pub fn to_local(&self, remote_ns: i128) -> u64 {
        let dr = remote_ns - self.ref_remote_ns;
        // dt = dr / (1 + drift) = dr − dr·drift/(1 + drift): keeps integer precision for big dr.
        let corr = (dr as f64 * self.drift / (1.0 + self.drift)).round() as i128;
        clamp_u64(self.ref_local_ns as i128 + dr - corr)
    }
}

pub(crate) fn clamp_u64(v: i128) -> u64 {
    v.clamp(0, u64::MAX as i128) as u64
}

#[derive(Debug, Clone, Copy, PartialEq)]
struct Point {
    x: f64,
    y: f64,
}

#[derive(Debug, Clone, Copy)]
struct Observation {
    /// Forward point (x = t1, y = t2 − t1), relative to the origins.
    fwd: Option<Point>,
    /// Backward point (x = t4, y = t3 − t4), relative to the origins.
    bwd: Option<Point>,
    /// The best one-way stamp ([`ClockModel::add_stamp`]) that arrived since
    /// the previous observation: another backward point, x ≤ `bwd.x`.
    stamp: Option<Point>,
}

impl Observation {
    /// Its local time: the forward point's, else the backward one's.
    fn x(&self) -> Option<f64> {
        self.fwd.or(self.bwd).or(self.stamp).map(|p| p.x)
    }

    /// This observation's backward points in x order.
    fn bwd_points(&self) -> impl Iterator<Item = Point> {
        let (a, b) = match (self.stamp, self.bwd) {
            (Some(s), Some(b)) if s.x > b.x => (Some(b), Some(s)),
            (s, b) => (s, b),
        };
        a.into_iter().chain(b)
    }

    /// The forward point, or (`upper`) the backward points.
    fn side(&self, upper: bool) -> impl Iterator<Item = Point> {
        let fwd = if upper { None } else { self.fwd };
        fwd.into_iter()
            .chain(self.bwd_points().filter(move |_| upper))
    }
}

/// A supporting line `y = value + slope × (x − x_ref)`.
#[derive(Debug, Clone, Copy)]
struct Line {
    value: f64,
    slope: f64,
}

#[derive(Debug, Clone, Copy)]
struct Fit {
    x_ref: f64,
    fwd: Option<Line>,
    bwd: Option<Line>,
    slope: f64,
    /// The slope's own uncertainty (1 σ, before the prior), or infinite
    /// while the window is too short to fit a slope.
    slope_sigma: f64,
    estimate: ClockEstimate,
}

impl Fit {
    fn fwd_at(&self, x: f64) -> Option<f64> {
        self.fwd.map(|l| l.value + self.slope * (x - self.x_ref))
    }
    fn bwd_at(&self, x: f64) -> Option<f64> {
        self.bwd.map(|l| l.value + self.slope * (x - self.x_ref))
    }
}

/// Offset + drift + quality of one remote clock against the local clock.
///
/// Thread-safe: no (owned by one thread, `Send`). Realtime-safe: adding an
/// observation does not allocate (buffers are sized at construction) but costs
/// O(window); call it from a worker thread. Reading [`ClockModel::estimate`]
/// is O(1) and realtime-safe.
#[derive(Debug, Clone)]
pub struct ClockModel {
    config: ClockModelConfig,
    observations: VecDeque<Observation>,
    /// Step candidates not (yet) in the window.
    pending: VecDeque<Observation>,
    /// Lower hull of the forward points (scratch, rebuilt per fit).
    hull: Vec<Point>,
    /// Upper hull of the backward points (one-way stamps included).
    hull_bwd: Vec<Point>,
    /// Upper hull of the exchanges' backward points only. The offset is read
    /// off this one and the forward hull: each sits above (below) the truth
    /// by about `spread / points`, and only with as many points on either
    /// side do the two biases cancel in their mean.
    hull_bwd_exchanges: Vec<Point>,
    /// The best one-way stamp since the last observation (see `add_stamp`).
    stamp: Option<Point>,
    stamps_used: u64,
    /// Scratch for medians (interior mutability keeps the read paths `&self`).
    scratch: std::cell::RefCell<Scratch>,
    origin_local: u64,
    origin_offset: i128,
    last_x_fwd: f64,
    last_x_bwd: f64,
    prior_drift: f64,
    fit: Option<Fit>,
    steps: u64,
    rejected: u64,
}

impl ClockModel {
    /// An empty model.
    pub fn new(config: ClockModelConfig) -> Self {
        let window = config.window.max(2);
        let confirm = config.step_confirm.max(1);
        Self {
            config: ClockModelConfig {
                window,
                step_confirm: confirm,
                ..config
            },
            observations: VecDeque::with_capacity(window),
            pending: VecDeque::with_capacity(confirm),
            hull: Vec::with_capacity(window),
            hull_bwd: Vec::with_capacity(2 * window),
            hull_bwd_exchanges: Vec::with_capacity(window),
            stamp: None,
            stamps_used: 0,
            scratch: std::cell::RefCell::new(Scratch(Vec::with_capacity(2 * window))),
            origin_local: 0,
            origin_offset: 0,
            last_x_fwd: f64::NEG_INFINITY,
            last_x_bwd: f64::NEG_INFINITY,
            prior_drift: 0.0,
            fit: None,
            steps: 0,
            rejected: 0,
        }
    }

    /// The configuration in use.
    pub fn config(&self) -> &ClockModelConfig {
        &self.config
    }

    /// Forget everything (keeps the last drift as the prior).
    pub fn reset(&mut self) {
        if let Some(fit) = &self.fit {
            self.prior_drift = fit.slope;
        }
        self.observations.clear();
        self.pending.clear();
        self.stamp = None;
        self.fit = None;
        self.last_x_fwd = f64::NEG_INFINITY;
        self.last_x_bwd = f64::NEG_INFINITY;
    }

    /// Set the drift assumed until the window spans `min_drift_span_ns`.
    pub fn set_prior_drift(&mut self, drift: f64) {
        self.prior_drift = drift;
    }

    /// The current estimate, if any observation has been used.
    pub fn estimate(&self) -> Option<ClockEstimate> {
        self.fit.map(|f| f.estimate)
    }

    /// How uncertain the fitted drift is, ppm: 1 σ from the spread of the
    /// points about their envelopes, `4 × spread / (points × span)` per side,
    /// the sides combined. `None` before the first observation, infinite
    /// while the window spans less than `min_drift_span_ns`. A scale, not a
    /// calibrated bound; an arbiter pings faster while it is large.
    pub fn drift_sigma_ppm(&self) -> Option<f64> {
        self.fit.map(|f| f.slope_sigma * 1e6)
    }

    /// Clock steps detected so far.
    pub fn steps(&self) -> u64 {
        self.steps
    }

    /// Observations rejected so far (inconsistent or contradicting).
    pub fn rejected(&self) -> u64 {
        self.rejected
    }

    /// Add a four-timestamp exchange.
    pub fn add_exchange(&mut self, ex: Exchange) -> Result<Added, SampleError> {
        let res = self.add_exchange_inner(ex);
        if res.is_err() {
            self.rejected += 1;
        }
        res
    }

    fn add_exchange_inner(&mut self, ex: Exchange) -> Result<Added, SampleError> {
        if ex.t4 < ex.t1 {
            return Err(SampleError::LocalOrder);
        }
        if ex.t3 < ex.t2 {
            return Err(SampleError::RemoteOrder);
        }
        if ex.round_trip_ns() < 0 {
            return Err(SampleError::NegativeDelay);
        }
        self.ensure_origin(ex.t1, ex.t2 as i128 - ex.t1 as i128);
        let fwd = self.point(ex.t1, ex.t2);
        let bwd = self.point(ex.t4, ex.t3);
        if fwd.x < self.last_x_fwd {
            // A reply to an older ping than one already used (reordered).
            return Err(SampleError::NotMonotonic);
        }
        // Replies are processed as they arrive, so t4 only goes backwards
        // for a caller that batches; keep the forward half then.
        let bwd = (bwd.x >= self.last_x_bwd).then_some(bwd);
        self.add(Observation {
            fwd: Some(fwd),
            bwd,
            stamp: None,
        })
    }

    /// Add a one-way stamp to a two-sided model: a frame the remote stamped
    /// `remote_ns` on its clock when it built it arrived at `local_ns`. Like
    /// the backward half of an exchange it lies below the true offset by a
    /// delay that is never negative, so it can only sharpen the backward
    /// envelope — and every frame a peer sends carries one (the TOAST
    /// header's `timestamp`), so a peer that pings, pongs to others and
    /// streams gives many more backward points than our own exchanges do.
    ///
    /// The window stays one entry per exchange: of the stamps between two
    /// exchanges only the best (highest against the current drift) is kept
    /// and joins the next exchange's entry. Stamps are used only once the
    /// model has a two-sided fit; one far above the backward envelope (more
    /// than `step_threshold_ns`: a clock that is not on its timeline yet) is
    /// refused. Returns whether the stamp was kept as the best so far.
    pub fn add_stamp(&mut self, remote_ns: u64, local_ns: u64) -> Result<bool, SampleError> {
        let Some(fit) = self.fit.filter(|f| f.fwd.is_some() && f.bwd.is_some()) else {
            return Ok(false);
        };
        let p = self.point(local_ns, remote_ns);
        if p.x < self.last_x_bwd {
            return Err(SampleError::NotMonotonic);
        }
        let line = fit.bwd_at(p.x).unwrap_or(p.y);
        if p.y - line > self.config.step_threshold_ns as f64 {
            self.rejected += 1;
            return Err(SampleError::Contradicts);
        }
        let better = self
            .stamp
            .is_none_or(|best| p.y - fit.slope * (p.x - best.x) > best.y);
        if better {
            self.stamp = Some(p);
        }
        Ok(better)
    }

    /// One-way stamps that made it into the window so far.
    pub fn stamps_used(&self) -> u64 {
        self.stamps_used
    }

    /// Add a one-sided observation: something stamped `remote_ns` on the
    /// remote clock was seen at `local_ns` on the local clock, after a delay
    /// that is never negative (a `process()` call after its block's reference
    /// instant, a GPU timestamp read back on the CPU).
    pub fn add_backward(&mut self, remote_ns: u64, local_ns: u64) -> Result<Added, SampleError> {
        self.ensure_origin(local_ns, remote_ns as i128 - local_ns as i128);
        let bwd = self.point(local_ns, remote_ns);
        if bwd.x < self.last_x_bwd {
            self.rejected += 1;
            return Err(SampleError::NotMonotonic);
        }
        let res = self.add(Observation {
            fwd: None,
            bwd: Some(bwd),
            stamp: None,
        });
        if res.is_err() {
            self.rejected += 1;
        }
        res
    }

    fn ensure_origin(&mut self, local: u64, offset: i128) {
        if self.observations.is_empty() && self.pending.is_empty() {
            self.origin_local = local;
            self.origin_offset = offset;
        }
    }

    fn point(&self, local: u64, remote: u64) -> Point {
        let x = (local as i128 - self.origin_local as i128) as f64;
        let y = (remote as i128 - local as i128 - self.origin_offset) as f64;
        Point { x, y }
    }

    /// How far an observation sits on the impossible side of the model, ns
    /// (0 if consistent). For a two-sided exchange, a clock step moves the
    /// whole exchange: its midpoint leaves the band between the envelopes
    /// while its round trip stays normal. A merely slow exchange (round trip
    /// well above the smallest) is never a step candidate: the envelopes
    /// ignore it anyway. A fast exchange improves an envelope and is fine.
    fn violation(&self, obs: &Observation) -> f64 {
        let Some(fit) = &self.fit else { return 0.0 };
        if self.observations.len() < 2 {
            return 0.0;
        }
        let threshold = self.config.step_threshold_ns as f64;
        match (obs.fwd, obs.bwd) {
            (Some(pf), Some(pb)) => {
                let (Some(f), Some(b)) = (fit.fwd_at(pf.x), fit.bwd_at(pb.x)) else {
                    return 0.0;
                };
                let rtt = pf.y - pb.y;
                if rtt > (f - b) + threshold {
                    return 0.0;
                }
                let mid = 0.5 * (pf.y + pb.y);
                (mid - f).max(b - mid).max(0.0)
            }
            (None, Some(p)) => fit.bwd_at(p.x).map_or(0.0, |l| (p.y - l).max(0.0)),
            (Some(p), None) => fit.fwd_at(p.x).map_or(0.0, |l| (l - p.y).max(0.0)),
            (None, None) => 0.0,
        }
    }

    fn add(&mut self, obs: Observation) -> Result<Added, SampleError> {
        let threshold = self.config.step_threshold_ns as f64;
        if self.violation(&obs) > threshold {
            if self.pending.len() == self.config.step_confirm {
                self.pending.pop_front();
            }
            self.pending.push_back(obs);
            if self.pending.len() < self.config.step_confirm {
                return Err(SampleError::Contradicts);
            }
            // A step: restart from the confirming observations.
            self.steps += 1;
            if let Some(fit) = &self.fit {
                self.prior_drift = fit.slope;
            }
            self.observations.clear();
            self.stamp = None;
            self.last_x_fwd = f64::NEG_INFINITY;
            self.last_x_bwd = f64::NEG_INFINITY;
            while let Some(o) = self.pending.pop_front() {
                self.push(o);
            }
            self.refit();
            return Ok(Added::StepRestart);
        }
        self.pending.clear();
        let stamp = self.stamp.take().filter(|p| p.x >= self.last_x_bwd);
        if stamp.is_some() {
            self.stamps_used += 1;
        }
        self.push(Observation { stamp, ..obs });
        self.refit();
        Ok(Added::Used)
    }

    fn push(&mut self, obs: Observation) {
        if self.observations.len() == self.config.window {
            self.observations.pop_front();
        }
        if let Some(newest) = obs.x() {
            let oldest_kept = newest - self.config.window_ns as f64;
            while self
                .observations
                .front()
                .and_then(Observation::x)
                .is_some_and(|x| x < oldest_kept)
            {
                self.observations.pop_front();
            }
        }
        if let Some(p) = obs.fwd {
            self.last_x_fwd = p.x;
        }
        for p in obs.bwd_points() {
            self.last_x_bwd = self.last_x_bwd.max(p.x);
        }
        self.observations.push_back(obs);
    }

    fn refit(&mut self) {
        let n = self.observations.len();
        if n == 0 {
            self.fit = None;
            return;
        }
        let mut sum_x = 0.0;
        let (mut fwd_points, mut bwd_points) = (0usize, 0usize);
        let mut x_min = f64::INFINITY;
        let mut x_max = f64::NEG_INFINITY;
        for o in &self.observations {
            fwd_points += usize::from(o.fwd.is_some());
            for p in o.fwd.into_iter().chain(o.bwd_points()) {
                sum_x += p.x;
                x_min = x_min.min(p.x);
                x_max = x_max.max(p.x);
            }
            bwd_points += o.bwd_points().count();
        }
        let count = fwd_points + bwd_points;
        let x_ref = (sum_x / count as f64).round();
        let span = (x_max - x_min).max(0.0);
        let max_slope = self.config.max_drift_ppm * 1e-6;
        let estimate_slope = span >= self.config.min_drift_span_ns as f64;

        self.build_hulls();
        let (has_f, has_b) = (!self.hull.is_empty(), !self.hull_bwd.is_empty());
        let (slope, slope_sigma) = if estimate_slope {
            // Each side's slope: the envelope's chord across the middle half
            // of the window, then their mean. (The LP line — the single hull
            // edge over x_ref — is as good on average, but an edge can be
            // short when two fast packets arrive close together, and its
            // slope is then off by hundreds of ppm for a few refits: under
            // 5 ± 2 ms of jitter that cost up to 0.55 ms of offset early in a
            // session. The chord is always half a span long.)
            let q = CHORD * span;
            let f = if has_f {
                hull_chord_slope(&self.hull, x_ref, q)
            } else {
                None
            };
            let b = if has_b {
                hull_chord_slope(&self.hull_bwd, x_ref, q)
            } else {
                None
            };
            // Each side's uncertainty: `σ ≈ 4 × spread / (points × span)`
            // (the fastest of k packets sits ~spread/k above the floor).
            // The sides are weighted by it: with one-way stamps the backward
            // side has more (and better) points than the forward one.
            let provisional = match (f, b) {
                (Some(f), Some(b)) => 0.5 * (f + b),
                (Some(v), None) | (None, Some(v)) => v,
                (None, None) => self.prior_drift,
            }
            .clamp(-max_slope, max_slope);
            let sigma_f = f.map(|_| self.side_sigma(false, fwd_points, x_ref, provisional, span));
            let sigma_b = b.map(|_| self.side_sigma(true, bwd_points, x_ref, provisional, span));
            let (fitted, sigma_s) = match (f.zip(sigma_f), b.zip(sigma_b)) {
                (Some((f, sf)), Some((b, sb))) => {
                    let (wf, wb) = (1.0 / (sf * sf).max(1e-30), 1.0 / (sb * sb).max(1e-30));
                    ((wf * f + wb * b) / (wf + wb), (wf + wb).sqrt().recip())
                }
                (Some((v, sv)), None) | (None, Some((v, sv))) => (v, sv),
                (None, None) => (self.prior_drift, f64::INFINITY),
            };
            let fitted = fitted.clamp(-max_slope, max_slope);
            // Shrink towards the prior by the fit's uncertainty.
            let sigma_p = self.config.prior_drift_sigma_ppm * 1e-6;
            let w = sigma_p * sigma_p / (sigma_p * sigma_p + sigma_s * sigma_s);
            let prior = self.prior_drift.clamp(-max_slope, max_slope);
            (prior + w * (fitted - prior), sigma_s)
        } else {
            (self.prior_drift.clamp(-max_slope, max_slope), f64::INFINITY)
        };
        // The offset: each envelope's supporting line at the fitted slope
        // (its lowest / highest point once the drift is taken out), over the
        // whole window. The mean of the two cancels the minimum delays. (An
        // earlier version read the envelopes themselves a quarter span back
        // to shorten the extrapolation; but between two hull vertices an
        // envelope runs at its edge's slope, not the drift, and the estimate
        // then ran off the truth at tens of ppm between vertices: the
        // offset p99 under 5 ± 2 ms jitter fell from 157 to 112 µs, the
        // worst from 350 to 225 µs, without it; docs/sync.md.)
        let fwd = has_f.then(|| Line {
            value: hull_support(&self.hull, false, x_ref, slope),
            slope,
        });
        let bwd = (!self.hull_bwd_exchanges.is_empty()).then(|| Line {
            value: hull_support(&self.hull_bwd_exchanges, true, x_ref, slope),
            slope,
        });
        let (offset_rel, uncertainty) = match (fwd, bwd) {
            (Some(f), Some(b)) => (
                0.5 * (f.value + b.value),
                0.5 * (f.value - b.value).max(0.0),
            ),
            (None, Some(b)) => (b.value, self.mean_distance(true, x_ref, b)),
            (Some(f), None) => (f.value, self.mean_distance(false, x_ref, f)),
            (None, None) => (0.0, f64::INFINITY),
        };
        let ref_local = self.origin_local as i128 + x_ref as i128;
        let ref_local_u = clamp_u64(ref_local);
        let ref_remote = ref_local_u as i128 + self.origin_offset + offset_rel.round() as i128;
        let fill = (n as f64 / 8.0).min(1.0);
        let quality = if uncertainty.is_finite() {
            fill / (1.0 + uncertainty / 1e6)
        } else {
            0.0
        };
        self.fit = Some(Fit {
            x_ref,
            fwd,
            bwd,
            slope,
            slope_sigma,
            estimate: ClockEstimate {
                ref_local_ns: ref_local_u,
                ref_remote_ns: ref_remote,
                drift: slope,
                uncertainty_ns: uncertainty,
                quality,
                observations: n,
                span_ns: span as u64,
            },
        });
    }

    /// Builds the lower hull of the forward points into `self.hull`, the
    /// upper hull of all backward points (one-way stamps included) into
    /// `self.hull_bwd`, and the upper hull of the exchanges' own backward
    /// points into `self.hull_bwd_exchanges`.
    fn build_hulls(&mut self) {
        let obs = &self.observations;
        build_hull(obs.iter().filter_map(|o| o.fwd), false, &mut self.hull);
        build_hull(
            obs.iter().flat_map(|o| o.bwd_points()),
            true,
            &mut self.hull_bwd,
        );
        build_hull(
            obs.iter().filter_map(|o| o.bwd),
            true,
            &mut self.hull_bwd_exchanges,
        );
    }

    /// Uncertainty of one side's slope, `4 × spread / (points × span)`, with
    /// spread the median distance of its `points` from its envelope at `slope`.
    fn side_sigma(&self, upper: bool, points: usize, x_ref: f64, slope: f64, span: f64) -> f64 {
        let hull = if upper { &self.hull_bwd } else { &self.hull };
        let line = Line {
            value: hull_support(hull, upper, x_ref, slope),
            slope,
        };
        4.0 * self.mean_distance(upper, x_ref, line) / (points.max(1) as f64 * span.max(1.0))
    }

    /// Median distance of one side's points from `line` (robust to delay outliers).
    fn mean_distance(&self, upper: bool, x_ref: f64, line: Line) -> f64 {
        let mut scratch = std::mem::take(&mut self.scratch.borrow_mut().0);
        scratch.clear();
        for p in self.observations.iter().flat_map(|o| o.side(upper)) {
            let l = line.value + line.slope * (p.x - x_ref);
            scratch.push((p.y - l).abs());
        }
        let out = if scratch.is_empty() {
            f64::INFINITY
        } else {
            let mid = scratch.len() / 2;
            let (_, m, _) = scratch.select_nth_unstable_by(mid, |a, b| a.total_cmp(b));
            *m
        };
        self.scratch.borrow_mut().0 = scratch;
        out
    }
}

#[derive(Debug, Clone, Default)]
struct Scratch(Vec<f64>);

/// The hull (a piecewise-linear envelope) at `x`, if inside its x range.
fn hull_value_at(hull: &[Point], x: f64) -> Option<f64> {
    let i = hull.windows(2).position(|w| w[0].x <= x && x <= w[1].x)?;
    let (a, b) = (hull[i], hull[i + 1]);
    if b.x > a.x {
        Some(a.y + (b.y - a.y) * (x - a.x) / (b.x - a.x))
    } else {
        Some(a.y.min(b.y))
    }
}

/// Half-width of the chord the drift is read from, as a fraction of the
/// window's span: the chord spans the middle half of the window.
const CHORD: f64 = 0.25;

/// Slope of the envelope's chord from `x_ref - q` to `x_ref + q`, falling
/// back to the hull edge over `x_ref` where the envelope does not reach.
fn hull_chord_slope(hull: &[Point], x_ref: f64, q: f64) -> Option<f64> {
    if q > 0.0 {
        if let (Some(a), Some(b)) = (
            hull_value_at(hull, x_ref - q),
            hull_value_at(hull, x_ref + q),
        ) {
            return Some((b - a) / (2.0 * q));
        }
    }
    hull_edge_slope(hull, x_ref)
}

/// Slope of the hull edge over `x_ref` (clamped to the end edges).
fn hull_edge_slope(hull: &[Point], x_ref: f64) -> Option<f64> {
    if hull.len() < 2 {
        return None;
    }
    let mut i = 0;
    while i + 2 < hull.len() && hull[i + 1].x < x_ref {
        i += 1;
    }
    let (a, b) = (hull[i], hull[i + 1]);
    (b.x > a.x).then(|| (b.y - a.y) / (b.x - a.x))
}

fn hull_support(points: &[Point], upper: bool, x_ref: f64, slope: f64) -> f64 {
    let it = points.iter().map(|p| p.y - slope * (p.x - x_ref));
    if upper {
        it.fold(f64::NEG_INFINITY, f64::max)
    } else {
        it.fold(f64::INFINITY, f64::min)
    }
}

/// The lower (or `upper`) convex hull of `points`, given in x order, into `hull`.
fn build_hull(points: impl Iterator<Item = Point>, upper: bool, hull: &mut Vec<Point>) {
    let sign = if upper { -1.0 } else { 1.0 };
    hull.clear();
    for p in points {
        let p = Point {
            x: p.x,
            y: sign * p.y,
        };
        if let Some(last) = hull.last() {
            if last.x == p.x {
                if p.y >= last.y {
                    continue;
                }
                hull.pop();
            }
        }
        while hull.len() >= 2 && cross(hull[hull.len() - 2], hull[hull.len() - 1], p) <= 0.0 {
            hull.pop();
        }
        hull.push(p);
    }
    for p in hull.iter_mut() {
        p.y *= sign;
    }
}

fn cross(o: Point, a: Point, b: Point) -> f64 {
    (a.x - o.x) * (b.y - o.y) - (a.y - o.y) * (b.x - o.x)
}

#[cfg(test)]
#[path = "model_tests.rs"]
mod tests;
