//! The clock the API clients' tests give them: it moves only when the client sleeps (or the
//! test says so), so a whole retry schedule runs in milliseconds and its waits can be read.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};
use sysrunner::github::Time;

/// A clock that only moves when the client sleeps: a whole retry schedule runs in milliseconds.
pub struct TestTime {
    now: Mutex<SystemTime>,
    sleeps: Mutex<Vec<Duration>>,
}

impl TestTime {
    pub fn new() -> Arc<TestTime> {
        Arc::new(TestTime {
            now: Mutex::new(SystemTime::now()),
            sleeps: Mutex::new(Vec::new()),
        })
    }
    pub fn sleeps(&self) -> Vec<u64> {
        self.sleeps
            .lock()
            .unwrap()
            .iter()
            .map(|d| d.as_secs())
            .collect()
    }
    pub fn advance(&self, d: Duration) {
        *self.now.lock().unwrap() += d;
    }
}

impl Time for TestTime {
    fn now(&self) -> SystemTime {
        *self.now.lock().unwrap()
    }
    fn sleep(&self, d: Duration) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        self.sleeps.lock().unwrap().push(d);
        self.advance(d);
        Box::pin(async {})
    }
    fn jitter(&self) -> f64 {
        1.0
    }
}
