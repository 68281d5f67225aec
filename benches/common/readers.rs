//! The continuous readers of the `events` table that benches define and
//! wait on (`/v1/pipelines`, `/v1/projections`), and the ingest-cost
//! measure both benches make of them against chDB's views.

use super::{post_sql, python_json, run_load};
use serde_json::Value;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// One kind of reader on a server: `kind` is `pipelines` or
/// `projections`, the path under `/v1` and the key of its list.
pub(crate) struct Readers {
    pub(crate) http: reqwest::blocking::Client,
    pub(crate) base: String,
    pub(crate) kind: &'static str,
}

impl Readers {
    pub(crate) fn new(base: &str, kind: &'static str) -> Readers {
        Readers {
            http: reqwest::blocking::Client::new(),
            base: base.to_string(),
            kind,
        }
    }

    pub(crate) fn get(&self, path: &str) -> Value {
        self.http
            .get(format!("{}{path}", self.base))
            .send()
            .unwrap()
            .json()
            .unwrap()
    }

    /// POSTs `body` to `path`; the status and the reply's text.
    pub(crate) fn post(&self, path: &str, body: Value) -> (u16, String) {
        let r = self
            .http
            .post(format!("{}{path}", self.base))
            .json(&body)
            .send()
            .unwrap();
        (r.status().as_u16(), r.text().unwrap())
    }

    /// Defines one reader, which must be accepted with `status`.
    pub(crate) fn define(&self, body: Value, status: u16) {
        let (got, text) = self.post(&format!("/v1/{}", self.kind), body);
        assert_eq!(got, status, "{text}");
    }

    pub(crate) fn delete(&self, name: &str) {
        let r = self
            .http
            .delete(format!("{}/v1/{}/{name}", self.base, self.kind))
            .send()
            .unwrap();
        assert_eq!(r.status().as_u16(), 204);
    }

    /// The highest position of `events` (0 before the first event).
    pub(crate) fn highest(&self) -> u64 {
        let sql = "SELECT max(position) AS p FROM events";
        let (status, text) = post_sql(&self.http, &self.base, sql);
        if status != 200 {
            return 0;
        }
        let rows: Value = serde_json::from_str(&text).unwrap();
        rows[0]["p"].as_u64().unwrap_or(0)
    }

    /// Waits until every reader, running, has read the whole table (at
    /// once when there is none).
    pub(crate) fn caught_up(&self) {
        let list = || self.get(&format!("/v1/{}", self.kind));
        if list()[self.kind].as_array().is_none_or(Vec::is_empty) {
            return;
        }
        let highest = self.highest();
        loop {
            let list = list();
            let all = list[self.kind].as_array().unwrap();
            assert!(all.iter().all(|p| p["status"] == "running"), "{list}");
            if all.iter().all(|p| p["position"].as_u64() == Some(highest)) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// How [`ingest_cost`] runs and names its rounds.
pub(crate) struct IngestCost<'a> {
    pub(crate) url: &'a str,
    pub(crate) bodies: Arc<Vec<Vec<u8>>>,
    pub(crate) batch: usize,
    pub(crate) requests: usize,
    /// The chDB side, run as `<script> ingest N <requests> <batch>`.
    pub(crate) script: &'a str,
    /// What the chDB side runs N of (`views`).
    pub(crate) peer: &'a str,
}

/// The ingest rate with each of `counts` readers defined (`body(i)` the
/// definition of the `i`th, named `p<i>`), and chDB's with as many views,
/// printed as ratios to none; the readers but `p0` are deleted after. The
/// rate with none.
pub(crate) fn ingest_cost(
    readers: &Readers,
    counts: &[usize],
    body: impl Fn(usize) -> Value,
    run: &IngestCost,
) -> f64 {
    let (mut base_rate, mut chdb_base, mut defined) = (0.0, 0.0, 0);
    for &n in counts {
        while defined < n {
            readers.define(body(defined), 201);
            defined += 1;
        }
        readers.caught_up();
        let load = run_load(
            run.url,
            run.bodies.clone(),
            run.batch,
            run.requests,
            4,
            None,
        );
        let t = Instant::now();
        readers.caught_up();
        let drain = t.elapsed();
        let rate = load.rate();
        let peer = python_json(
            run.script,
            &[
                "ingest".as_ref(),
                n.to_string().as_ref(),
                run.requests.to_string().as_ref(),
                run.batch.to_string().as_ref(),
            ],
        );
        let peer_rate = peer["rate"].as_f64().unwrap();
        if n == 0 {
            base_rate = rate;
            chdb_base = peer_rate;
        }
        println!(
            "{n:>2} {}: {rate:.0} events/s ({:.2} of none; caught up {:.0} ms after the last ack) | chDB, {n} {}: {peer_rate:.0} rows/s ({:.2} of none)",
            readers.kind,
            rate / base_rate,
            drain.as_secs_f64() * 1e3,
            run.peer,
            peer_rate / chdb_base
        );
    }
    for i in 1..defined {
        readers.delete(&format!("p{i}"));
    }
    base_rate
}
