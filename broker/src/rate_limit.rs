//! Per-client, per-route rate limits (GCRA, via `governor`). Each limited route has its
//! own limiter keyed by client address, so `N/period` means: one client may call that
//! route N times in a burst, refilling at N per period. Over the limit: 429 with
//! `Retry-After`. Logging in is one limit however it is done ([`LoginLimit`]): the REST
//! login and `/handle`'s `auth` action draw on the same bucket.

use crate::{error::ApiError, middleware::ClientAddr};
use axum::{
    extract::{Request, State},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::MethodRouter,
};
use governor::{DefaultKeyedRateLimiter, Quota, clock::Clock};
use std::{
    net::IpAddr,
    num::NonZeroU32,
    str::FromStr,
    sync::{Arc, Mutex},
    time::Duration,
};

/// A rate-limit setting: `off`, or `N/period` such as `10/min`, `3/10s`, `50/s`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateSpec {
    /// No limit.
    Off,
    /// At most `requests` per `per`, bursting up to `requests`.
    Limit {
        /// Requests allowed per period (and the burst size).
        requests: NonZeroU32,
        /// The period.
        per: Duration,
    },
}

impl FromStr for RateSpec {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let text = text.trim();
        if text.eq_ignore_ascii_case("off") {
            return Ok(Self::Off);
        }
        let usage = || format!("{text:?}: expected N/period such as 10/min or 3/10s, or off");
        let (count, period) = text.split_once('/').ok_or_else(usage)?;
        let requests = count.trim().parse::<NonZeroU32>().map_err(|_| usage())?;
        let period = period.trim();
        // "min" reads as "1min"; "10s" is already a duration.
        let per = platform::settings::parse_duration(period)
            .or_else(|_| platform::settings::parse_duration(&format!("1{period}")))
            .map_err(|_| usage())?;
        if per.is_zero() {
            return Err(usage());
        }
        Ok(Self::Limit { requests, per })
    }
}

impl RateSpec {
    fn quota(self) -> Option<Quota> {
        match self {
            Self::Off => None,
            Self::Limit { requests, per } => {
                let interval = (per / requests.get()).max(Duration::from_nanos(1));
                Quota::with_period(interval).map(|quota| quota.allow_burst(requests))
            }
        }
    }
}

type Limiter = DefaultKeyedRateLimiter<IpAddr>;

/// The one login limit per client, shared by every way of logging in (none when off).
#[derive(Clone)]
pub struct LoginLimit(Option<Arc<Limiter>>);

impl LoginLimit {
    /// A login limit of `spec`.
    pub fn new(spec: RateSpec) -> Self {
        Self(spec.quota().map(|quota| Arc::new(Limiter::keyed(quota))))
    }

    /// Counts one login attempt of `client`; 429 with `Retry-After` over the limit.
    pub fn check(&self, client: IpAddr) -> Result<(), ApiError> {
        match &self.0 {
            Some(limiter) => check(limiter, client),
            None => Ok(()),
        }
    }
}

/// Every limiter made, so one housekeeping task can forget idle clients.
#[derive(Clone, Default)]
pub struct Limiters(Arc<Mutex<Vec<Arc<Limiter>>>>);

impl Limiters {
    /// Wraps `route` in a limiter of its own, unless `spec` is off.
    pub fn limit<S: Clone + Send + Sync + 'static>(
        &self,
        spec: RateSpec,
        route: MethodRouter<S>,
    ) -> MethodRouter<S> {
        let Some(quota) = spec.quota() else {
            return route;
        };
        self.limit_by(Arc::new(Limiter::keyed(quota)), route)
    }

    /// Wraps `route` in the shared login limit.
    pub fn limit_logins<S: Clone + Send + Sync + 'static>(
        &self,
        login: &LoginLimit,
        route: MethodRouter<S>,
    ) -> MethodRouter<S> {
        match &login.0 {
            Some(limiter) => self.limit_by(Arc::clone(limiter), route),
            None => route,
        }
    }

    fn limit_by<S: Clone + Send + Sync + 'static>(
        &self,
        limiter: Arc<Limiter>,
        route: MethodRouter<S>,
    ) -> MethodRouter<S> {
        self.0
            .lock()
            .expect("no code panics while holding the limiter list")
            .push(Arc::clone(&limiter));
        route.route_layer(middleware::from_fn_with_state(limiter, enforce))
    }

    /// Drops state of clients that are back to a full bucket; call now and then.
    pub fn forget_idle_clients(&self) {
        for limiter in self
            .0
            .lock()
            .expect("no code panics while holding the limiter list")
            .iter()
        {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
    }
}

fn check(limiter: &Limiter, client: IpAddr) -> Result<(), ApiError> {
    limiter.check_key(&client).map_err(|not_until| {
        let wait = not_until.wait_time_from(governor::clock::DefaultClock::default().now());
        metrics::counter!("broker_rate_limited_total").increment(1);
        // Whole seconds, rounded up: a client that waits this long is let in.
        let seconds = wait
            .as_secs()
            .saturating_add(u64::from(wait.subsec_nanos() > 0));
        ApiError::too_many_requests(seconds)
    })
}

async fn enforce(State(limiter): State<Arc<Limiter>>, request: Request, next: Next) -> Response {
    let client = request
        .extensions()
        .get::<ClientAddr>()
        .map_or(IpAddr::from([0, 0, 0, 0]), |addr| addr.0);
    match check(&limiter, client) {
        Ok(()) => next.run(request).await,
        Err(error) => error.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_read_like_people_write_them() {
        let ten_a_minute = RateSpec::Limit {
            requests: NonZeroU32::new(10).unwrap(),
            per: Duration::from_secs(60),
        };
        assert_eq!("10/min".parse(), Ok(ten_a_minute));
        assert_eq!("10/1m".parse(), Ok(ten_a_minute));
        assert_eq!(
            "3/10s".parse(),
            Ok(RateSpec::Limit {
                requests: NonZeroU32::new(3).unwrap(),
                per: Duration::from_secs(10)
            })
        );
        assert_eq!("off".parse(), Ok(RateSpec::Off));
        for bad in ["", "10", "0/s", "x/s", "10/never", "10/0s"] {
            assert!(bad.parse::<RateSpec>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn the_request_after_the_burst_is_refused() {
        let quota = "3/10s".parse::<RateSpec>().unwrap().quota().unwrap();
        let limiter = Limiter::keyed(quota);
        let client = IpAddr::from([127, 0, 0, 1]);
        for _ in 0..3 {
            assert!(limiter.check_key(&client).is_ok());
        }
        assert!(limiter.check_key(&client).is_err());
        assert!(
            limiter.check_key(&IpAddr::from([127, 0, 0, 2])).is_ok(),
            "other clients are not affected"
        );
    }
}
