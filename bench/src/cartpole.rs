//! `ludus bench`: CartPole steps per second on one thread, five ways: native
//! Rust; through wasm one env per call, by the generic `step` (an owned
//! observation and info text) and by the fast path (`step-packed`, or
//! `step-vector` where a plugin predates it: fixed-size values, no
//! allocation); through wasm batched; and through wasm with every frame
//! recorded to SQLite. The gaps between them are the cost of the sandbox, of
//! crossing into it per step, and of recording.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

use ludus_arena::model::{Action, Frame, Observation, Timing};
use ludus_arena::plugin::{EnvInstance, Limits, LoadError, Plugin, PluginKind};
use ludus_arena::recorder::{EpisodeFinish, Recorder, RunRecord};
use ludus_arena::stopwatch::{Stamp, thread_cpu_time};
use ludus_arena::store::StoreError;
use ludus_core::{Outcome, splitmix64};

// The very file the cartpole plugin compiles to wasm, so the native figure
// measures the same code as the wasm figures, not a look-alike.
#[path = "../../plugins/examples/cartpole/src/physics.rs"]
#[allow(dead_code)]
mod cartpole_physics;

use cartpole_physics::CartPole;

/// Warm-up before each measurement (JIT-free, but caches, branch predictors
/// and the allocator settle).
const WARMUP: Duration = Duration::from_millis(200);
/// Steps between two looks at the clock.
const CLOCK_EVERY: u64 = 1024;

#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("benchmark: {0}")]
    Crash(String),
    #[error("{0}")]
    Invalid(String),
}

impl From<ludus_arena::plugin::Crash> for BenchError {
    fn from(c: ludus_arena::plugin::Crash) -> Self {
        BenchError::Crash(c.message)
    }
}

/// The figures of one `ludus bench`.
#[derive(Clone, Debug, Serialize)]
pub struct BenchReport {
    /// Seconds each measurement ran for.
    pub seconds: f64,
    /// Environment copies per call in the batched measurement.
    pub batch: usize,
    pub native_steps_per_sec: f64,
    /// One env per call through the generic `step`.
    pub wasm_single_steps_per_sec: f64,
    /// One env per call through the fast path, `step-packed` (contract
    /// 0.1.2) or `step-vector` (0.1.1); absent where the plugin has neither,
    /// e.g. one built against contract 0.1.0.
    pub wasm_vector_steps_per_sec: Option<f64>,
    pub wasm_batched_steps_per_sec: f64,
    pub wasm_recorded_steps_per_sec: f64,
    /// wasm one env per call / native.
    pub wasm_single_vs_native: f64,
    /// wasm one env per call by the fast path / native.
    pub wasm_vector_vs_native: Option<f64>,
    /// The fast path / `step`, one env per call.
    pub wasm_vector_vs_single: Option<f64>,
    /// wasm batched / native.
    pub wasm_batched_vs_native: f64,
    /// wasm recorded / native.
    pub wasm_recorded_vs_native: f64,
    /// wasm batched / wasm one env per call.
    pub wasm_batched_vs_single: f64,
    /// wasm recorded / wasm unrecorded (one env per call), over all rounds.
    pub recorded_vs_unrecorded: f64,
    /// Extra time per step that recording costs, in percent of an unrecorded
    /// step, counting the wait for the closing commit as a run does: the
    /// median of the rounds.
    pub recording_overhead_percent: f64,
    /// The same up to the last step, without the closing commit: what
    /// recording costs a run long enough for that one wait not to matter
    /// (the median of the rounds).
    pub steady_recording_overhead_percent: f64,
    /// Milliseconds from the last recorded step until everything was
    /// committed (once per run, whatever its length; the median of the
    /// rounds).
    pub closing_commit_ms: f64,
    /// Each round of the recorded measurement: a recorded run between two
    /// unrecorded halves.
    pub rounds: Vec<RoundReport>,
    /// CPU time per step of the thread that steps, one env per call,
    /// unrecorded and recorded, and of the recorder thread per recorded
    /// frame (absent where the platform does not say). Unlike the rates,
    /// these hardly change when other processes share the cores.
    pub wasm_single_cpu_ns_per_step: Option<f64>,
    pub recorded_stepping_cpu_ns_per_step: Option<f64>,
    pub recorder_cpu_ns_per_frame: Option<f64>,
    /// Extra CPU time the stepping thread spends per recorded step, in
    /// percent of an unrecorded step: the recording overhead when the
    /// recorder thread has a core of its own.
    pub stepping_cpu_overhead_percent: Option<f64>,
    /// Frames recorded, episodes recorded, and the database's size afterwards.
    pub recorded_frames: u64,
    pub recorded_episodes: u64,
    pub recorded_db_bytes: u64,
}

/// One round of `ludus bench`'s recorded measurement.
#[derive(Clone, Debug, Serialize)]
pub struct RoundReport {
    pub unrecorded_steps_per_sec: f64,
    /// Counting the closing commit.
    pub recorded_steps_per_sec: f64,
    pub overhead_percent: f64,
    pub steady_overhead_percent: f64,
    pub closing_commit_ms: f64,
}

impl BenchReport {
    pub fn ns_per_step(steps_per_sec: f64) -> f64 {
        if steps_per_sec > 0.0 {
            1e9 / steps_per_sec
        } else {
            f64::INFINITY
        }
    }
}

fn ratio(a: f64, b: f64) -> f64 {
    if b > 0.0 { a / b } else { 0.0 }
}

/// A uniform draw in [0, 1) from the top 53 bits.
fn uniform(rng: &mut u64) -> f64 {
    let mut r = ludus_core::SplitMix64::new(*rng);
    let x = r.next_f64();
    *rng = r.state;
    x
}

/// Calls `chunk` (which does about [`CLOCK_EVERY`] steps and returns how many;
/// 0 stops early) until `duration` has passed since `start`. Returns the steps.
fn run_until(
    start: Instant,
    duration: Duration,
    mut chunk: impl FnMut() -> Result<u64, BenchError>,
) -> Result<u64, BenchError> {
    let mut steps = 0u64;
    loop {
        let n = chunk()?;
        steps += n;
        if n == 0 || start.elapsed() >= duration {
            return Ok(steps);
        }
    }
}

/// Warms up, then measures; returns (steps, elapsed, this thread's CPU
/// nanoseconds per step).
fn measure(
    seconds: Duration,
    mut chunk: impl FnMut() -> Result<u64, BenchError>,
) -> Result<(u64, Duration, Option<f64>), BenchError> {
    run_until(Instant::now(), WARMUP, &mut chunk)?;
    let cpu = thread_cpu_time();
    let start = Instant::now();
    let steps = run_until(start, seconds, &mut chunk)?;
    let elapsed = start.elapsed();
    Ok((
        steps,
        elapsed,
        cpu_ns_per_step(cpu, thread_cpu_time(), steps),
    ))
}

/// Nanoseconds of CPU per step between two readings of [`thread_cpu_time`].
fn cpu_ns_per_step(before: Option<Duration>, after: Option<Duration>, steps: u64) -> Option<f64> {
    let used = after?.checked_sub(before?)?;
    (steps > 0).then(|| used.as_nanos() as f64 / steps as f64)
}

fn rate(steps: u64, elapsed: Duration) -> f64 {
    steps as f64 / elapsed.as_secs_f64().max(1e-9)
}

/// Measures CartPole at `cartpole` for `seconds` per mode (after a short
/// warm-up each), on the calling thread; the batched mode steps `batch`
/// copies per call.
/// The recorded measurement takes `rounds` rounds of `2 * seconds` each.
pub fn run_bench(
    cartpole: &Path,
    seconds: f64,
    batch: usize,
    rounds: usize,
) -> Result<BenchReport, BenchError> {
    if !seconds.is_finite() || seconds <= 0.0 {
        return Err(BenchError::Invalid(format!(
            "--seconds must be a positive number (got {seconds})"
        )));
    }
    if batch == 0 {
        return Err(BenchError::Invalid("--batch must be at least 1".into()));
    }
    if rounds == 0 {
        return Err(BenchError::Invalid("--rounds must be at least 1".into()));
    }
    let plugin = Plugin::load(cartpole, PluginKind::Env, Limits::DEFAULT)?;
    let duration = Duration::from_secs_f64(seconds);

    let native = rate_native(duration)?;
    let vector = rate_vector(&plugin, duration)?;
    let batched = rate_batched(&plugin, duration, batch)?;
    let paired = rate_paired(&plugin, duration, rounds)?;
    let (mut unrecorded, mut recorded_stepping) = (Tally::default(), Tally::default());
    let mut closing = Duration::ZERO;
    let mut recorder_cpu = Some(Duration::ZERO);
    let mut episodes = 0;
    for r in &paired.rounds {
        unrecorded.add(&r.single);
        recorded_stepping.add(&r.recorded);
        closing += r.closing;
        recorder_cpu = recorder_cpu.zip(r.recorder_cpu).map(|(a, b)| a + b);
        episodes += r.episodes;
    }
    let (single, single_cpu) = (unrecorded.rate(), unrecorded.cpu_ns_per_step());
    // The closing commits count: a run of this length waits for one.
    let recorded = rate(recorded_stepping.steps, recorded_stepping.elapsed + closing);
    let stepping_cpu = recorded_stepping.cpu_ns_per_step();
    let round_reports: Vec<RoundReport> = paired
        .rounds
        .iter()
        .map(|r| RoundReport {
            unrecorded_steps_per_sec: r.single.rate(),
            recorded_steps_per_sec: r.recorded_rate(true),
            overhead_percent: r.overhead_percent(true),
            steady_overhead_percent: r.overhead_percent(false),
            closing_commit_ms: r.closing.as_secs_f64() * 1e3,
        })
        .collect();
    let median_of = |f: fn(&RoundReport) -> f64| median(round_reports.iter().map(f).collect());

    Ok(BenchReport {
        seconds,
        batch,
        native_steps_per_sec: native,
        wasm_single_steps_per_sec: single,
        wasm_vector_steps_per_sec: vector,
        wasm_batched_steps_per_sec: batched,
        wasm_recorded_steps_per_sec: recorded,
        wasm_single_vs_native: ratio(single, native),
        wasm_vector_vs_native: vector.map(|v| ratio(v, native)),
        wasm_vector_vs_single: vector.map(|v| ratio(v, single)),
        wasm_batched_vs_native: ratio(batched, native),
        wasm_recorded_vs_native: ratio(recorded, native),
        wasm_batched_vs_single: ratio(batched, single),
        recorded_vs_unrecorded: ratio(recorded, single),
        recording_overhead_percent: median_of(|r| r.overhead_percent),
        steady_recording_overhead_percent: median_of(|r| r.steady_overhead_percent),
        closing_commit_ms: median_of(|r| r.closing_commit_ms),
        wasm_single_cpu_ns_per_step: single_cpu,
        recorded_stepping_cpu_ns_per_step: stepping_cpu,
        recorder_cpu_ns_per_frame: cpu_ns_per_step(
            Some(Duration::ZERO),
            recorder_cpu,
            recorded_stepping.steps,
        ),
        stepping_cpu_overhead_percent: single_cpu
            .zip(stepping_cpu)
            .map(|(u, r)| (ratio(r, u) - 1.0) * 100.0),
        recorded_frames: recorded_stepping.steps,
        recorded_episodes: episodes,
        recorded_db_bytes: paired.db_bytes,
        rounds: round_reports,
    })
}

/// (a) The physics compiled natively, no sandbox, no encoding.
fn rate_native(duration: Duration) -> Result<f64, BenchError> {
    let mut rng = 0x5EED_0001u64;
    let mut sim = CartPole::default();
    sim.reset([
        uniform(&mut rng),
        uniform(&mut rng),
        uniform(&mut rng),
        uniform(&mut rng),
    ]);
    let mut obs = [0.0f32; 4];
    let (steps, elapsed, _) = measure(duration, || {
        for _ in 0..CLOCK_EVERY {
            let right = splitmix64(&mut rng) & 1 == 1;
            let (_reward, terminated, truncated) = sim.step(right);
            // The plugin builds its observation every step; so does this.
            sim.observe(&mut obs);
            std::hint::black_box(&obs);
            if terminated || truncated {
                sim.reset([
                    uniform(&mut rng),
                    uniform(&mut rng),
                    uniform(&mut rng),
                    uniform(&mut rng),
                ]);
            }
        }
        Ok(CLOCK_EVERY)
    })?;
    Ok(rate(steps, elapsed))
}

fn new_env(plugin: &Arc<Plugin>, seed: u64) -> Result<EnvInstance, BenchError> {
    let mut env = plugin.env(seed)?;
    env.init("")?
        .map_err(|m| BenchError::Crash(format!("{} rejected an empty config: {m}", plugin.name)))?;
    Ok(env)
}

/// (b') One wasm call per step by the allocation-free fast path
/// (`step-packed` of contract 0.1.2, else `step-vector` of 0.1.1), each new
/// episode by `reset-packed` where the plugin offers it (`reset` otherwise);
/// `None` where the plugin offers no fast path.
fn rate_vector(plugin: &Arc<Plugin>, duration: Duration) -> Result<Option<f64>, BenchError> {
    let mut rng = 0x5EED_0005u64;
    let mut env = new_env(plugin, splitmix64(&mut rng))?;
    env.reset(splitmix64(&mut rng))?;
    if env.step_vector(&[0.0])?.is_none() {
        return Ok(None);
    }
    let (steps, elapsed, _) = measure(duration, || {
        for _ in 0..CLOCK_EVERY {
            let a = (splitmix64(&mut rng) & 1) as f32;
            let Some(r) = env.step_vector(&[a])? else {
                return Err(BenchError::Crash(
                    "step-vector stopped answering mid-run".into(),
                ));
            };
            if r.terminated || r.truncated {
                // `reset_vector` answers `None` at once where there is no
                // packed reset.
                let seed = splitmix64(&mut rng);
                if env.reset_vector(seed)?.is_none() {
                    env.reset(seed)?;
                }
            }
        }
        Ok(CLOCK_EVERY)
    })?;
    Ok(Some(rate(steps, elapsed)))
}

/// (c) `batch` copies stepped per wasm call.
fn rate_batched(plugin: &Arc<Plugin>, duration: Duration, batch: usize) -> Result<f64, BenchError> {
    let mut rng = 0x5EED_0003u64;
    let mut env = new_env(plugin, splitmix64(&mut rng))?;
    let seeds: Vec<u64> = (0..batch).map(|_| splitmix64(&mut rng)).collect();
    env.batch_reset(&seeds)?
        .map_err(|r| BenchError::Crash(r.0))?;
    let mut actions = vec![0.0f32; batch];
    let calls = (CLOCK_EVERY as usize).div_ceil(batch).max(1);
    let (steps, elapsed, _) = measure(duration, || {
        for _ in 0..calls {
            for a in actions.iter_mut() {
                *a = (splitmix64(&mut rng) & 1) as f32;
            }
            let r = env
                .batch_step(&actions)?
                .map_err(|r| BenchError::Crash(r.0))?;
            if r.flags.len() != batch {
                return Err(BenchError::Crash(format!(
                    "batch-step returned {} flags for {batch} copies",
                    r.flags.len()
                )));
            }
        }
        Ok((calls * batch) as u64)
    })?;
    Ok(rate(steps, elapsed))
}

/// (b) and (d), measured back to back in rounds: one wasm call per step by
/// the generic `step`, unrecorded; and the same with every step made into a
/// [`Frame`] and recorded into a fresh SQLite file.
struct Paired {
    rounds: Vec<Round>,
    db_bytes: u64,
}

/// One round of [`Paired`]: a recorded run between two unrecorded halves.
struct Round {
    single: Tally,
    /// The recorded stepping, up to the last step.
    recorded: Tally,
    /// From the last step until the recorder had committed everything.
    closing: Duration,
    recorder_cpu: Option<Duration>,
    episodes: u64,
}

impl Round {
    /// The recorded steps/s, counting the closing commit (`closing`) or not.
    fn recorded_rate(&self, closing: bool) -> f64 {
        let mut elapsed = self.recorded.elapsed;
        if closing {
            elapsed += self.closing;
        }
        rate(self.recorded.steps, elapsed)
    }

    /// Recording's cost in percent of an unrecorded step, counting the
    /// closing commit (`closing`) or not.
    fn overhead_percent(&self, closing: bool) -> f64 {
        (ratio(self.single.rate(), self.recorded_rate(closing)) - 1.0) * 100.0
    }
}

/// The median of `values` (the mean of the middle two for an even count).
fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    match n {
        0 => 0.0,
        _ if n % 2 == 1 => values[n / 2],
        _ => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

/// What the stretches of one side of [`Paired`] add up to.
struct Tally {
    steps: u64,
    elapsed: Duration,
    /// The stepping thread's CPU time (`None` where the platform does not say).
    cpu: Option<Duration>,
}

impl Default for Tally {
    fn default() -> Self {
        Tally {
            steps: 0,
            elapsed: Duration::ZERO,
            cpu: Some(Duration::ZERO),
        }
    }
}

impl Tally {
    /// Runs `chunk` for `length` and adds what it did.
    fn run(
        &mut self,
        length: Duration,
        chunk: impl FnMut() -> Result<u64, BenchError>,
    ) -> Result<(), BenchError> {
        let cpu = thread_cpu_time();
        let start = Instant::now();
        self.steps += run_until(start, length, chunk)?;
        self.elapsed += start.elapsed();
        let used = thread_cpu_time()
            .zip(cpu)
            .and_then(|(after, before)| after.checked_sub(before));
        self.cpu = self.cpu.zip(used).map(|(c, u)| c + u);
        Ok(())
    }

    fn add(&mut self, other: &Tally) {
        self.steps += other.steps;
        self.elapsed += other.elapsed;
        self.cpu = self.cpu.zip(other.cpu).map(|(a, b)| a + b);
    }

    fn rate(&self) -> f64 {
        rate(self.steps, self.elapsed)
    }

    fn cpu_ns_per_step(&self) -> Option<f64> {
        cpu_ns_per_step(Some(Duration::ZERO), self.cpu, self.steps)
    }
}

/// The recorded side's episode in progress, and where it is in the run.
struct RecordedStepper<'a> {
    env: &'a mut EnvInstance,
    writer: ludus_arena::recorder::FrameWriter,
    seeds: &'a [u64],
    rng: u64,
    index: usize,
    step: u32,
    return_: f64,
    observation: Observation,
    task: String,
    reset_info: String,
    /// The episode rows ran out, or the recorder stopped.
    done: bool,
}

impl RecordedStepper<'_> {
    /// About [`CLOCK_EVERY`] recorded steps; 0 once done.
    fn chunk(&mut self) -> Result<u64, BenchError> {
        if self.done {
            return Ok(0);
        }
        let mut n = 0;
        while n < CLOCK_EVERY {
            let a = (splitmix64(&mut self.rng) & 1) as u32;
            let t0 = Stamp::now();
            let r = self.env.step(&Action::Discrete(a))?;
            let step_ns = t0.ns_until(Stamp::now());
            let ended = r.terminated || r.truncated;
            let frame = Frame {
                step: self.step,
                observation: std::mem::replace(&mut self.observation, r.observation),
                action: Action::Discrete(a),
                env_reward: r.reward,
                reward: r.reward,
                terminated: r.terminated,
                truncated: r.truncated,
                info: r.info,
                success: None,
                note: None,
                logs: Vec::new(),
                memory_writes: Vec::new(),
                model_calls: Vec::new(),
            };
            let timing = Timing {
                step_ns,
                ..Timing::default()
            };
            n += 1;
            self.step += 1;
            self.return_ += f64::from(r.reward);
            let id = self.index as u64;
            self.writer.push(id, &frame, timing);
            if !self.writer.alive {
                // The recorder stopped; `finish` says why.
                self.done = true;
                return Ok(n);
            }
            if ended {
                // CartPole's truncation (500 steps upright) is its success.
                let finish = EpisodeFinish {
                    outcome: if r.terminated {
                        Outcome::Terminated
                    } else {
                        Outcome::Truncated
                    },
                    return_: self.return_,
                    length: u64::from(self.step),
                    success: !r.terminated,
                    error: None,
                    task: std::mem::take(&mut self.task),
                    reset_info: std::mem::take(&mut self.reset_info),
                    final_observation: Some(std::mem::take(&mut self.observation)),
                    end_writes: Vec::new(),
                };
                self.writer.end(id, finish);
                self.index += 1;
                self.step = 0;
                self.return_ = 0.0;
                if self.index >= self.seeds.len() {
                    self.done = true;
                    return Ok(n);
                }
                let reset = self.env.reset(self.seeds[self.index])?;
                self.observation = reset.observation;
                self.task = reset.task;
                self.reset_info = reset.info;
                self.writer.start(self.index as u64, self.seeds[self.index]);
            }
        }
        Ok(n)
    }

    /// Records the episode the clock cut short as interrupted.
    fn close(mut self) {
        if !self.done {
            let finish = EpisodeFinish {
                outcome: Outcome::Interrupted,
                return_: self.return_,
                length: u64::from(self.step),
                success: false,
                error: None,
                task: self.task,
                reset_info: self.reset_info,
                final_observation: Some(self.observation),
                end_writes: Vec::new(),
            };
            self.writer.end(self.index as u64, finish);
        }
        // Dropping the writer sends what it holds.
    }
}

/// (b) and (d), in `rounds` rounds: unrecorded for half of `duration`, a
/// recorded run of `duration` (its own run in one SQLite file, with its
/// closing commit), unrecorded for the other half. The machine's pace drifts
/// by several percent over seconds, far more on a busy host; measured
/// seconds apart, with other modes between, the two gave ratios scattered
/// far more widely, and a single round still caught the odd slow second on
/// one side. The recorded stretch is one run, as `ludus run` records: short
/// turns taken with the unrecorded side flattered recording, since the
/// recorder thread and the kernel caught up on its backlog in the
/// unrecorded turns. Both sides step one instance: two instances of the
/// same plugin, both stepped unrecorded, differed by tens of percent on a
/// busy host (where each one's memory lies), which buried what recording costs.
fn rate_paired(
    plugin: &Arc<Plugin>,
    duration: Duration,
    rounds: usize,
) -> Result<Paired, BenchError> {
    let mut rng = 0x5EED_0002u64;
    let mut env = new_env(plugin, splitmix64(&mut rng))?;
    env.reset(splitmix64(&mut rng))?;
    let plain_episodes = std::cell::Cell::new(0u64);
    let mut plain_chunk = |env: &mut EnvInstance| {
        for _ in 0..CLOCK_EVERY {
            let a = (splitmix64(&mut rng) & 1) as u32;
            let r = env.step(&Action::Discrete(a))?;
            if r.terminated || r.truncated {
                env.reset(splitmix64(&mut rng))?;
                plain_episodes.set(plain_episodes.get() + 1);
            }
        }
        Ok(CLOCK_EVERY)
    };
    let warm = Instant::now();
    run_until(warm, WARMUP, || plain_chunk(&mut env))?;
    let episodes_per_sec = plain_episodes.get() as f64 / warm.elapsed().as_secs_f64().max(1e-9);

    let dir = tempfile::tempdir()
        .map_err(|e| BenchError::Crash(format!("cannot make a temporary directory: {e}")))?;
    let db_path = dir.path().join("bench.db");
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    let mut rec_rng = 0x5EED_0004u64;
    let mut out = Vec::with_capacity(rounds);
    for round in 0..rounds {
        let mut single = Tally::default();
        let mut recorded = Tally::default();
        single.run(duration / 2, || plain_chunk(&mut env))?;

        // Episode rows are made up front (as a run does): enough for the
        // unrecorded pace with room to spare. Should they run out, the
        // recorded side ends early, which still gives a fair rate.
        let rows = (episodes_per_sec * duration.as_secs_f64() * 1.5) as usize + 1024;
        let seeds: Vec<u64> = (0..rows).map(|_| splitmix64(&mut rec_rng)).collect();
        let record = RunRecord {
            id: format!(
                "bench-{:016x}-{round}",
                nanos as u64 ^ u64::from(std::process::id())
            ),
            seed: 0,
            episodes: rows as u64,
            jobs: 1,
            spec: serde_json::json!({ "bench": "cartpole", "env": { "path": plugin.path, "hash": plugin.hash } }),
            agent_base: None,
            fold_agent_memory: true,
            branch: None,
        };
        let recorder = Recorder::start(&db_path, record, &seeds)?;
        let reset = env.reset(seeds[0])?;
        let mut rec = RecordedStepper {
            env: &mut env,
            writer: recorder.writer(),
            seeds: &seeds,
            rng: splitmix64(&mut rec_rng),
            index: 0,
            step: 0,
            return_: 0.0,
            observation: reset.observation,
            task: reset.task,
            reset_info: reset.info,
            done: false,
        };
        rec.writer.start(0, seeds[0]);
        recorded.run(duration, || rec.chunk())?;
        // The last frames, the interrupted episode's ending and the run's
        // closing commit.
        let closing = Instant::now();
        rec.close();
        let (reports, recorder_cpu) = recorder.finish_timed()?;
        let closing = closing.elapsed();
        single.run(duration - duration / 2, || plain_chunk(&mut env))?;
        out.push(Round {
            single,
            recorded,
            closing,
            recorder_cpu,
            episodes: reports.len() as u64,
        });
    }
    let db_bytes = ["bench.db", "bench.db-wal"]
        .iter()
        .filter_map(|f| std::fs::metadata(dir.path().join(f)).ok())
        .map(|m| m.len())
        .sum();
    Ok(Paired {
        rounds: out,
        db_bytes,
    })
}
