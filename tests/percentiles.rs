//! The Rust run aggregate reads the same percentiles as the master's Python
//! from the same histograms (issue 14.1).
//!
//! `tests/fixtures/percentiles/cases.json` holds latency distributions as
//! workers send them (`{count, sum, min, max, hist}`, µs) and the exact
//! percentiles of their merge, computed by the fixture's generator with
//! rational arithmetic. This test merges them with [`HistReport::merge`]
//! and reads [`HistReport::percentile_us`] (what `standalone::aggregate`
//! tables use); `tests/python/test_percentiles.py` does the same with the
//! master's `Dist`. A difference in rank rounding, bucket order or clamping
//! on either side fails one of the two.

mod common;

use serde::Deserialize;
use tokenswarm::metrics::report::HistReport;

#[derive(Deserialize)]
struct Fixture {
    cases: Vec<Case>,
}

#[derive(Deserialize)]
struct Case {
    name: String,
    reports: Vec<HistReport>,
    expected: Vec<Expected>,
}

#[derive(Deserialize)]
struct Expected {
    p: f64,
    us: Option<u64>,
}

fn fixture() -> Fixture {
    let path = common::root().join("tests/fixtures/percentiles/cases.json");
    let text = std::fs::read_to_string(&path).expect("the committed percentile fixture");
    serde_json::from_str(&text).expect("cases.json matches the generator's format")
}

/// Every case's merged histograms give exactly the fixture's percentiles,
/// whatever order the workers' reports are merged in.
#[test]
fn merged_histograms_give_the_fixture_percentiles() {
    let f = fixture();
    assert!(f.cases.len() >= 8, "the fixture lost cases: {}", f.cases.len());
    let mut checked = 0;
    for case in &f.cases {
        for order in [false, true] {
            let mut merged = HistReport::default();
            let mut reports: Vec<&HistReport> = case.reports.iter().collect();
            if order {
                reports.reverse();
            }
            for r in reports {
                merged.merge(r);
            }
            for e in &case.expected {
                assert_eq!(
                    merged.percentile_us(e.p),
                    e.us,
                    "case {}: p{} (reports merged {})",
                    case.name,
                    e.p,
                    if order { "last to first" } else { "in order" }
                );
                checked += 1;
            }
        }
    }
    assert!(checked > 40, "only {checked} percentiles checked");
}
