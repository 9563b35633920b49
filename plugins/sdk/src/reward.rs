use crate::{RewardInfo, ScoreResult, Transition};

/// A reward function: scores each transition of an episode.
pub trait Reward: Sized + 'static {
    /// Builds the reward function from its config string and describes it.
    fn init(config: &str) -> Result<(Self, RewardInfo), String>;
    /// Scores one transition.
    fn score(&mut self, transition: &Transition) -> ScoreResult;
}

/// Plugin state behind the export macro.
#[doc(hidden)]
pub struct RewardState<R: Reward> {
    reward: Option<R>,
}

impl<R: Reward> Default for RewardState<R> {
    fn default() -> Self {
        RewardState { reward: None }
    }
}

impl<R: Reward> RewardState<R> {
    pub fn init(&mut self, config: String) -> Result<RewardInfo, String> {
        let (reward, info) = R::init(&config)?;
        self.reward = Some(reward);
        Ok(info)
    }
    pub fn reward(&mut self) -> &mut R {
        match self.reward.as_mut() {
            Some(r) => r,
            None => panic!("the host called the reward function before `init`"),
        }
    }
}

/// Exports a type implementing [`Reward`] as this component's reward function.
#[macro_export]
macro_rules! export_reward {
    ($ty:ty) => {
        const _: () = {
            struct __LudusReward;
            ::std::thread_local! {
                static __STATE: ::std::cell::RefCell<$crate::__rt::RewardState<$ty>> =
                    ::std::cell::RefCell::new(::std::default::Default::default());
            }
            impl $crate::bindings::exports::ludus::plugin::reward_plugin::Guest for __LudusReward {
                fn init(config: String) -> Result<$crate::RewardInfo, String> {
                    __STATE.with_borrow_mut(|s| s.init(config))
                }
                fn score(transition: $crate::Transition) -> $crate::ScoreResult {
                    __STATE.with_borrow_mut(|s| $crate::Reward::score(s.reward(), &transition))
                }
            }
    $crate::bindings::__export_world!(__LudusReward with_types_in $crate::bindings);
        };
    };
}
