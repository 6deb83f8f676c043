//! Wire compatibility proven with bytes, both ways:
//! - frames encoded by Locust's own Python `Message.serialize` (golden files
//!   in tests/fixtures/wire, made by make_golden.py) decode in Rust to the
//!   messages they mean;
//! - frames encoded in Rust decode in Python with Locust's own decoder and
//!   feed Locust's real stats listener (tests/python/check_worker_frames.py).

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use tokenswarm::locust::wire::{self, MasterMsg, StatsPayload, WorkerMsg, WorkerState};
use tokenswarm::metrics::Recorder;
use tokenswarm::outcome::{Failure, FailureKind, Outcome, Usage};
use tokenswarm::scenario::{Arrival, LoadMode, Provider, Slo, TestConfig, Wait};

fn golden(name: &str) -> MasterMsg {
    let path = common::root()
        .join("tests/fixtures/wire")
        .join(format!("{name}.msgpack"));
    let bytes = std::fs::read(&path).unwrap();
    wire::decode(&bytes).unwrap_or_else(|e| panic!("{name}: {e}"))
}

#[test]
fn python_frames_decode_to_the_messages_they_mean() {
    assert_eq!(golden("ack"), MasterMsg::Ack { index: Some(3) });
    assert_eq!(golden("stop"), MasterMsg::Stop);
    assert_eq!(golden("quit"), MasterMsg::Quit);
    assert_eq!(golden("reconnect"), MasterMsg::Reconnect);
    assert_eq!(golden("heartbeat"), MasterMsg::Heartbeat);
    assert_eq!(
        golden("spawning_complete"),
        MasterMsg::SpawningComplete { user_count: Some(9) }
    );
    match golden("custom") {
        MasterMsg::Custom { kind, data } => {
            assert_eq!(kind, "llm_note");
            // Locust's datetime hook: a plain map, no msgpack ext type.
            assert_eq!(data["when"]["__datetime__"], true);
            assert_eq!(data["when"]["as_str"], "20240102T03:04:05.678901");
        }
        other => panic!("custom: {other:?}"),
    }
}

#[test]
fn python_spawn_with_real_parsed_options_carries_the_test_definition() {
    let MasterMsg::Spawn(spawn) = golden("spawn") else {
        panic!("not a spawn")
    };
    assert_eq!(spawn.timestamp, 1763900000.25);
    assert_eq!(
        spawn.user_classes_count,
        BTreeMap::from([("ChatShort".into(), 7), ("Msgs".into(), 2)])
    );
    assert_eq!(spawn.host.as_deref(), Some("http://127.0.0.1:8000"));
    assert_eq!(spawn.stop_timeout, Some(2.5));
    assert_eq!(spawn.cluster_users, Some(20));
    assert_eq!(spawn.spawn_rate, Some(2.0));
    let cfg: TestConfig = spawn.config.expect("config present").expect("config parses");
    cfg.validate().unwrap();
    assert_eq!(cfg.scenarios[0].provider, Provider::OpenaiChat);
    assert_eq!(
        cfg.scenarios[0].wait,
        Wait::Between {
            min: Duration::from_millis(500),
            max: Duration::from_millis(1500)
        }
    );
    assert_eq!(cfg.scenarios[0].extra_body["ignore_eos"], serde_json::json!(true));
    assert_eq!(cfg.scenarios[1].api_key_env.as_deref(), Some("ANTHROPIC_API_KEY"));
    assert_eq!(
        (cfg.load.mode, cfg.load.arrival, cfg.load.burstiness),
        (LoadMode::Open, Arrival::Gamma, 0.5)
    );
    assert_eq!(
        cfg.slo,
        Slo {
            ttft_ms: Some(500.0),
            tpot_ms: None,
            e2e_ms: None
        }
    );
}

fn stats_frame() -> WorkerMsg {
    let cfg = TestConfig::from_yaml(
        "scenarios:\n  - {name: ChatShort, provider: openai-chat, model: m, prompt_length: 10, output_length: 4}\n",
    )
    .unwrap();
    let rec = Recorder::new(&cfg.scenarios, Slo::default());
    let ok = |ms: f64| Outcome {
        total: tokenswarm::units::seconds_saturating(ms / 1e3),
        ttft: Some(Duration::from_millis(5)),
        e2e: Some(Duration::from_millis(9)),
        output_chunks: 4,
        usage: Usage {
            input_tokens: Some(10),
            output_tokens: Some(4),
            ..Usage::default()
        },
        ..Outcome::default()
    };
    rec.record(0, &ok(12.5), None);
    rec.record(0, &ok(20.0), None);
    let failed = Outcome {
        failure: Some(Failure::new(
            FailureKind::HttpStatus(500),
            "HTTP 500 Internal Server Error",
            "boom",
        )),
        ..ok(40.0)
    };
    rec.record(0, &failed, None);
    let w = rec.take();
    WorkerMsg::Stats(Box::new(StatsPayload {
        stats: w.entries,
        stats_total: w.total,
        errors: w.errors,
        user_classes_count: BTreeMap::from([("ChatShort".into(), 3)]),
        user_count: 3,
        llm: w.llm,
    }))
}

#[test]
fn rust_frames_decode_in_locusts_python_and_merge_in_its_stats() {
    let dir = common::test_dir("wire-golden");
    let frames = [
        ("client_ready", WorkerMsg::ClientReady),
        (
            "heartbeat",
            WorkerMsg::Heartbeat {
                state: WorkerState::Running,
                cpu_percent: 12.5,
                memory_bytes: 1 << 20,
            },
        ),
        (
            "spawning_complete",
            WorkerMsg::SpawningComplete {
                user_classes_count: BTreeMap::from([("ChatShort".into(), 3), ("Msgs".into(), 1)]),
                user_count: 4,
            },
        ),
        ("spawning", WorkerMsg::Spawning),
        ("client_stopped", WorkerMsg::ClientStopped),
        ("quit", WorkerMsg::Quit),
        (
            "exception",
            WorkerMsg::Exception {
                msg: "unknown user class 'X'".into(),
                traceback: String::new(),
            },
        ),
        (
            "custom",
            WorkerMsg::Custom {
                kind: "tokenswarm_warning".into(),
                data: serde_json::json!({"scenario": "ChatShort", "message": "m"}),
            },
        ),
        ("stats", stats_frame()),
    ];
    for (name, msg) in &frames {
        std::fs::write(dir.join(format!("{name}.msgpack")), wire::encode(msg, "vm_1")).unwrap();
    }
    let out = std::process::Command::new(common::python())
        .arg(common::root().join("tests/python/check_worker_frames.py"))
        .arg(&dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "Locust's decoder rejected our frames:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
