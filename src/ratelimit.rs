//! Rate limits: a token bucket per (caller, step), configured per step (`governor`).

use std::collections::HashMap;
use std::time::Duration;

use governor::{DefaultKeyedRateLimiter, Quota};

use crate::config::StepSettings;

/// The limiters of all steps that have one.
#[derive(Default)]
pub struct RateLimits {
    by_step: HashMap<String, DefaultKeyedRateLimiter<String>>,
}

impl RateLimits {
    /// One keyed limiter per step with a `rate_limit`.
    pub fn new<'a>(steps: impl IntoIterator<Item = &'a StepSettings>) -> Self {
        let by_step = steps
            .into_iter()
            .filter_map(|s| {
                let r = s.rate_limit?;
                let quota = Quota::per_minute(r.per_minute).allow_burst(r.burst);
                Some((s.name.clone(), DefaultKeyedRateLimiter::keyed(quota)))
            })
            .collect();
        Self { by_step }
    }

    /// `Ok` if `caller` may call `step` now, else how long to wait. `caller` gives the caller's
    /// key; it is only asked for when the step has a limit.
    pub fn check(&self, step: &str, caller: impl FnOnce() -> String) -> Result<(), Duration> {
        let Some(l) = self.by_step.get(step) else {
            return Ok(());
        };
        l.check_key(&caller()).map_err(|not_until| {
            not_until.wait_time_from(governor::clock::Clock::now(
                &governor::clock::DefaultClock::default(),
            ))
        })
    }

    /// Drops buckets that are full again (call now and then, so idle callers use no memory).
    pub fn shrink(&self) {
        for l in self.by_step.values() {
            l.retain_recent();
            l.shrink_to_fit();
        }
    }
}
