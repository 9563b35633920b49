//! Continuous batching: the calls of concurrent episodes to one model are
//! answered together. A thread owns the model's turn: it takes the calls
//! waiting for it, reads each new prompt alone, then decodes every
//! unfinished sequence in one step per token, answering each call as its
//! sequence ends and admitting the next waiting call in its place.

use std::collections::VecDeque;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Instant;

use ludus_arena::chat::{ChatRequest, ChatResponse, LiveAnswer, ModelClient, ModelError};
use ludus_arena::model::Observation;
use tch::Device;

use super::backend::{Generated, OpenError, PolicyModel, Seq};
use crate::config::Dtype;
use crate::options::DeviceChoice;

/// A call's answer, with the tokens read and generated.
pub type Answer = Result<(ChatResponse, Generated), ModelError>;

struct Job {
    request: ChatRequest,
    seed: u64,
    reply: Sender<Answer>,
}

/// The batching thread of one model.
pub struct Engine {
    jobs: Option<Sender<Job>>,
    thread: Option<JoinHandle<()>>,
    /// The most sequences one decoding step has carried.
    widest: Arc<AtomicUsize>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Engine")
    }
}

fn gone() -> ModelError {
    ModelError::Unavailable("the model failed in an earlier call".into())
}

impl Engine {
    /// Starts answering calls with `model`, which others (a learner) may
    /// lock between decoding steps.
    pub fn start(model: Arc<Mutex<PolicyModel>>) -> Engine {
        let (tx, rx) = channel();
        let widest = Arc::new(AtomicUsize::new(0));
        let w = widest.clone();
        let thread = std::thread::Builder::new()
            .name("ludus-model".into())
            .spawn(move || serve(&model, &rx, &w))
            .ok();
        Engine {
            jobs: thread.is_some().then_some(tx),
            thread,
            widest,
        }
    }

    /// The most sequences one decoding step has carried so far.
    pub fn widest_step(&self) -> usize {
        self.widest.load(Ordering::Relaxed)
    }

    /// Answers `request`, waiting for its turn in the batch.
    pub fn answer(&self, request: &ChatRequest, seed: u64) -> Answer {
        let (reply, answer) = channel();
        let job = Job {
            request: request.clone(),
            seed,
            reply,
        };
        self.jobs
            .as_ref()
            .ok_or_else(gone)?
            .send(job)
            .map_err(|_| gone())?;
        answer.recv().map_err(|_| gone())?
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        // The thread ends when it has no sender left and nothing to do.
        self.jobs = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve(model: &Mutex<PolicyModel>, jobs: &Receiver<Job>, widest: &AtomicUsize) {
    let mut waiting: VecDeque<Job> = VecDeque::new();
    let mut seqs: Vec<Seq> = Vec::new();
    let mut owners: Vec<Job> = Vec::new();
    loop {
        if seqs.is_empty() && waiting.is_empty() {
            match jobs.recv() {
                Ok(j) => waiting.push_back(j),
                Err(_) => return,
            }
        }
        while let Ok(j) = jobs.try_recv() {
            waiting.push_back(j);
        }
        let Ok(m) = model.lock() else {
            // A learner failed while holding the model: the callers' reply
            // channels close with the thread.
            return;
        };
        let step = catch_unwind(AssertUnwindSafe(|| {
            while seqs.len() < m.batch.max(1)
                && let Some(job) = waiting.pop_front()
            {
                match m.prepare(&job.request, job.seed) {
                    Err(e) => {
                        let _ = job.reply.send(Err(e));
                    }
                    Ok((prompt, sampling, schema)) => {
                        let stop = job.request.stop.clone();
                        seqs.push(m.start(prompt, sampling, stop, schema));
                        owners.push(job);
                    }
                }
            }
            widest.fetch_max(seqs.len(), Ordering::Relaxed);
            m.advance(&mut seqs);
            let mut i = 0;
            while i < seqs.len() {
                if seqs[i].finish.is_none() {
                    i += 1;
                    continue;
                }
                let g = m.finished(seqs.remove(i));
                let job = owners.remove(i);
                let _ = job.reply.send(Ok((m.respond(&job.request, &g), g)));
            }
        }));
        if let Err(panic) = step {
            let first = ludus_core::panic_message(panic.as_ref())
                .unwrap_or("a libtorch error")
                .to_string();
            tracing::error!("the model failed: {first}");
            for job in owners.drain(..) {
                let _ = job.reply.send(Err(ModelError::Unavailable(format!(
                    "the model failed: {first}"
                ))));
            }
            seqs.clear();
        }
    }
}

/// The run's `policy:` endpoints, as a [`ModelClient`]: the concurrent
/// calls to each model are batched.
pub struct PolicyModels {
    models: HashMap<String, Engine>,
    described: serde_json::Value,
}

impl std::fmt::Debug for PolicyModels {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PolicyModels")
            .field("endpoints", &self.described)
            .finish()
    }
}

impl PolicyModels {
    /// Opens the endpoints, each on the device it names.
    pub fn open(endpoints: &[PolicySpec]) -> Result<PolicyModels, OpenError> {
        let mut models = HashMap::new();
        let mut described = Vec::new();
        for e in endpoints {
            // The one refusal: CUDA named where there is none.
            let device = crate::options::device(e.device).map_err(|_| OpenError::Open {
                path: e.path.clone(),
                message: "device=cuda: no CUDA device is available here (use device=cpu, or run on a machine with a GPU)".into(),
            })?;
            let mut m = PolicyModel::open_as(&e.path, device, e.dtype, true)?;
            m.batch = e.batch;
            let mut d = serde_json::json!({
                "name": e.name,
                "url": format!("policy:{}", e.path.display()),
                "model": m.name,
                "batch": m.batch,
            });
            // What the model holds, not what was asked for.
            if m.llama.kind() == tch::Kind::BFloat16 {
                d["dtype"] = "bf16".into();
            }
            if let Device::Cuda(i) = m.llama.device {
                d["device"] = format!("cuda:{i}").into();
            }
            described.push(d);
            models.insert(e.name.clone(), Engine::start(Arc::new(Mutex::new(m))));
        }
        Ok(PolicyModels {
            models,
            described: described.into(),
        })
    }
}

impl ModelClient for PolicyModels {
    fn has_endpoint(&self, name: &str) -> bool {
        self.models.contains_key(name)
    }

    fn chat(&self, request: &ChatRequest, _images: &Observation, seed: u64) -> LiveAnswer {
        let started = Instant::now();
        let result = match self.models.get(&request.endpoint) {
            None => Err(ModelError::UnknownEndpoint(format!(
                "no model endpoint `{}`",
                request.endpoint
            ))),
            Some(engine) => engine.answer(request, seed).map(|(r, _)| r),
        };
        LiveAnswer {
            result,
            attempts: Vec::new(),
            latency_ms: started.elapsed().as_secs_f64() * 1e3,
        }
    }

    fn prices(&self, _endpoint: &str) -> (f64, f64) {
        (0.0, 0.0)
    }

    fn describe(&self) -> serde_json::Value {
        self.described.clone()
    }
}

/// A `--model [NAME=]policy:PATH[,batch=N][,dtype=bf16][,device=cuda]`
/// value.
#[derive(Clone, Debug, PartialEq)]
pub struct PolicySpec {
    pub name: String,
    pub path: PathBuf,
    /// Sequences decoded together ([`PolicyModel::batch`]).
    pub batch: usize,
    /// The weights' type.
    pub dtype: Dtype,
    /// Where the model runs (the CPU unless the value names another).
    pub device: DeviceChoice,
}
