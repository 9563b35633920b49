use crate::{Action, AgentInfo, EnvInfo, EpisodeEnd, Observation, StepContext};

/// An agent.
pub trait Agent: Sized + 'static {
    /// Builds the agent from its config string and describes it.
    fn init(config: &str) -> Result<(Self, AgentInfo), String>;
    /// A new episode starts. `seed` is for the agent's own randomness.
    fn begin_episode(&mut self, env: &EnvInfo, task: &str, seed: u64) {
        let _ = (env, task, seed);
    }
    /// Chooses an action.
    fn act(&mut self, observation: &Observation, context: &StepContext) -> Action;
    /// The episode ended.
    fn end_episode(&mut self, end: &EpisodeEnd) {
        let _ = end;
    }
}

/// Plugin state behind the export macro.
#[doc(hidden)]
pub struct AgentState<A: Agent> {
    agent: Option<A>,
}

impl<A: Agent> Default for AgentState<A> {
    fn default() -> Self {
        AgentState { agent: None }
    }
}

impl<A: Agent> AgentState<A> {
    pub fn init(&mut self, config: String) -> Result<AgentInfo, String> {
        let (agent, info) = A::init(&config)?;
        self.agent = Some(agent);
        Ok(info)
    }
    pub fn agent(&mut self) -> &mut A {
        match self.agent.as_mut() {
            Some(a) => a,
            None => panic!("the host called the agent before `init`"),
        }
    }
}

/// Exports a type implementing [`Agent`] as this component's agent.
#[macro_export]
macro_rules! export_agent {
    ($ty:ty) => {
        const _: () = {
            struct __LudusAgent;
            ::std::thread_local! {
                static __STATE: ::std::cell::RefCell<$crate::__rt::AgentState<$ty>> =
                    ::std::cell::RefCell::new(::std::default::Default::default());
            }
            impl $crate::bindings::exports::ludus::plugin::agent_plugin::Guest for __LudusAgent {
                fn init(config: String) -> Result<$crate::AgentInfo, String> {
                    __STATE.with_borrow_mut(|s| s.init(config))
                }
                fn begin_episode(env: $crate::EnvInfo, task: String, seed: u64) {
                    __STATE.with_borrow_mut(|s| {
                        $crate::Agent::begin_episode(s.agent(), &env, &task, seed)
                    })
                }
                fn act(
                    observation: $crate::Observation,
                    context: $crate::StepContext,
                ) -> $crate::Action {
                    __STATE
                        .with_borrow_mut(|s| $crate::Agent::act(s.agent(), &observation, &context))
                }
                fn end_episode(end: $crate::EpisodeEnd) {
                    __STATE.with_borrow_mut(|s| $crate::Agent::end_episode(s.agent(), &end))
                }
            }
    $crate::bindings::__export_world!(__LudusAgent with_types_in $crate::bindings);
        };
    };
}
