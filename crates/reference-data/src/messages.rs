//! Message generators.

use chrono::{DateTime, Duration, NaiveDate, Utc};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

/// The six owners of the reference data.
pub const REFERENCE_OWNERS: [&str; 6] = ["alice", "bob", "carol", "dave", "erin", "frank"];

const TIERS: [&str; 4] = ["bronze", "silver", "gold", "platinum"];

fn reference_start() -> DateTime<Utc> {
    NaiveDate::from_ymd_opt(2022, 4, 4).and_then(|d| d.and_hms_opt(12, 0, 0)).map(|t| t.and_utc()).unwrap_or_default()
}

/// Orders: `{"order_id": 3, "order_owner": "alice", "order_value": 870, "timestamp": "2022-04-04 12:00:01"}`.
#[derive(Debug, Clone)]
pub struct OrderGenerator {
    rng: SmallRng,
    owners: Vec<String>,
    orders_per_owner: u64,
    next_ts: DateTime<Utc>,
    step: Duration,
    /// Messages produced so far.
    pub produced: u64,
}

impl OrderGenerator {
    /// The reference shape: six order ids owned by six owners, one second apart.
    pub fn reference(seed: u64) -> Self {
        Self::new(seed, REFERENCE_OWNERS.iter().map(|s| s.to_string()).collect(), 1, Duration::seconds(1))
    }

    /// `owners.len() * orders_per_owner` order ids; timestamps advance by `step`.
    pub fn new(seed: u64, owners: Vec<String>, orders_per_owner: u64, step: Duration) -> Self {
        Self {
            rng: SmallRng::seed_from_u64(seed),
            owners,
            orders_per_owner: orders_per_owner.max(1),
            next_ts: reference_start(),
            step,
            produced: 0,
        }
    }

    /// The next message as (key, JSON payload).
    pub fn next_message(&mut self) -> (String, String) {
        let order_count = self.owners.len() as u64 * self.orders_per_owner;
        let order_id = self.rng.gen_range(1..=order_count.max(1));
        let owner = &self.owners[((order_id - 1) % self.owners.len() as u64) as usize];
        let value = self.rng.gen_range(1..=1000);
        let ts = self.next_ts.format("%Y-%m-%d %H:%M:%S");
        self.next_ts += self.step;
        self.produced += 1;
        (
            order_id.to_string(),
            format!(r#"{{"order_id": {order_id}, "order_owner": "{owner}", "order_value": {value}, "timestamp": "{ts}"}}"#),
        )
    }
}

/// Membership changes: `{"order_owner": "alice", "membership": "gold", "timestamp": "2022-04-04 11:30:00"}`.
#[derive(Debug, Clone)]
pub struct MembershipGenerator {
    rng: SmallRng,
    owners: Vec<String>,
    next_ts: DateTime<Utc>,
    step: Duration,
}

impl MembershipGenerator {
    /// The reference shape: the six owners, starting half an hour before the orders.
    pub fn reference(seed: u64) -> Self {
        Self::new(seed, REFERENCE_OWNERS.iter().map(|s| s.to_string()).collect(), Duration::seconds(10))
    }

    /// Membership changes for `owners`, timestamps advancing by `step`.
    pub fn new(seed: u64, owners: Vec<String>, step: Duration) -> Self {
        Self { rng: SmallRng::seed_from_u64(seed ^ 0x9e37_79b9), owners, next_ts: reference_start() - Duration::minutes(30), step }
    }

    /// The next message as (key, JSON payload).
    pub fn next_message(&mut self) -> (String, String) {
        let owner = self.owners[self.rng.gen_range(0..self.owners.len())].clone();
        let tier = TIERS[self.rng.gen_range(0..TIERS.len())];
        let ts = self.next_ts.format("%Y-%m-%d %H:%M:%S");
        self.next_ts += self.step;
        (owner.clone(), format!(r#"{{"order_owner": "{owner}", "membership": "{tier}", "timestamp": "{ts}"}}"#))
    }
}

/// The `n`-th kind of malformed message (cycles through the kinds tests expect in the
/// dead-letter table).
pub fn malformed_message(n: u64) -> String {
    match n % 6 {
        0 => r#"{"order_id": 1, "order_owner": "alice", "order_value": "#.to_string(),
        1 => r#"{"order_id": "one", "order_owner": "alice", "order_value": 5, "timestamp": "2022-04-04 12:00:01"}"#.to_string(),
        2 => r#"{"order_owner": "alice", "order_value": 5, "timestamp": "2022-04-04 12:00:01"}"#.to_string(),
        3 => r#"{"order_id": 1, "order_owner": "alice", "order_value": 5, "timestamp": "04/04/2022 noon"}"#.to_string(),
        4 => "not json at all".to_string(),
        _ => r#"[{"order_id": 1}]"#.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_and_shaped() {
        let mut a = OrderGenerator::reference(7);
        let mut b = OrderGenerator::reference(7);
        for _ in 0..100 {
            assert_eq!(a.next_message(), b.next_message());
        }
        let (_, msg) = OrderGenerator::reference(1).next_message();
        let v: serde_json::Value = serde_json::from_str(&msg).unwrap();
        assert_eq!(v["timestamp"], "2022-04-04 12:00:00");
        assert!(REFERENCE_OWNERS.contains(&v["order_owner"].as_str().unwrap()));
        for n in 0..6 {
            assert!(serde_json::from_str::<serde_json::Value>(&malformed_message(n)).map_or(true, |v| !v.is_object()
                || v.get("order_id").is_none_or(|i| !i.is_i64())
                || v.get("timestamp").is_some_and(|t| t == "04/04/2022 noon")));
        }
    }
}
