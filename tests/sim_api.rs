//! Simulator behaviour: prefix cache, output lengths, bad input, context
//! limit, slots and queueing, /sim/stats, the request log, shutdown.

#[path = "sim_support.rs"]
mod support;

use serde_json::{Value, json};
use support::*;
use tokenswarm::sim::SimConfig;

async fn cached_of(sim: &Sim, prompt: &str) -> u64 {
    let s = sim.stream("/v1/chat/completions", &chat(prompt, 2, true)).await;
    let u = s.usage_event().unwrap();
    assert_eq!(
        u["usage"]["prompt_tokens_details"]["cached_tokens"],
        u["sim"]["cached_tokens"]
    );
    u["usage"]["prompt_tokens_details"]["cached_tokens"].as_u64().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prefix_cache_hits_repeated_prefixes_only() {
    let sim = Sim::start(fast()).await;
    let prefix = words(100, 1); // 6 whole blocks + 4 words
    assert_eq!(cached_of(&sim, &format!("{prefix} u1 x y")).await, 0);
    assert_eq!(cached_of(&sim, &format!("{prefix} u2 x y")).await, 96);
    assert_eq!(cached_of(&sim, &format!("{prefix} u3 x y")).await, 96);
    // the same words across messages / system count the same
    let body = json!({"model": "m", "max_tokens": 2, "stream": false, "messages": [
        {"role": "system", "content": words(40, 1)},
        {"role": "user", "content": format!("{} z", words(100, 1).split(' ').skip(40).collect::<Vec<_>>().join(" "))}]});
    let (st, v) = sim.post_json("/v1/chat/completions", &body).await;
    assert_eq!(st, 200);
    assert_eq!(v["usage"]["prompt_tokens_details"]["cached_tokens"], 96, "{v}");
    // unique prompts never hit
    for i in 0..5 {
        assert_eq!(cached_of(&sim, &format!("unique{i} {}", words(64, 2))).await, 0);
    }
    // Anthropic: input_tokens excludes cache reads
    let (_, v) = sim
        .post_json("/v1/messages", &anthropic(&format!("{prefix} anth"), 2, false))
        .await;
    assert_eq!(v["usage"]["cache_read_input_tokens"], 96);
    assert_eq!(v["usage"]["input_tokens"], 101 - 96);
    // reset clears the cache
    sim.post("/sim/reset", "").await;
    assert_eq!(cached_of(&sim, &format!("{prefix} u4 x y")).await, 0);
    sim.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prefix_cache_is_bounded_lru() {
    let sim = Sim::start(SimConfig {
        prefix_cache_blocks: 4,
        ..fast()
    })
    .await;
    let a = words(64, 1);
    let b = words(64, 5);
    assert_eq!(cached_of(&sim, &format!("{a} q")).await, 0);
    assert_eq!(cached_of(&sim, &format!("{a} q")).await, 64);
    assert_eq!(cached_of(&sim, &format!("{b} q")).await, 0); // evicts a
    assert_eq!(cached_of(&sim, &format!("{a} q")).await, 0);
    sim.stop().await;
}

async fn out(sim: &Sim, extra: Value, max_tokens: u64) -> (u64, String) {
    let mut body = chat("a b c", max_tokens, true);
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    let s = sim.stream("/v1/chat/completions", &body).await;
    let u = s.usage_event().unwrap();
    let n = u["usage"]["completion_tokens"].as_u64().unwrap();
    assert_eq!(n as usize, s.tokens());
    assert_eq!(u["sim"]["output_tokens"], n);
    // non-streaming agrees
    body["stream"] = false.into();
    let (_, v) = sim.post_json("/v1/chat/completions", &body).await;
    assert_eq!(v["usage"]["completion_tokens"], n);
    assert_eq!(v["choices"][0]["finish_reason"].as_str(), s.finish().as_deref());
    (n, s.finish().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn output_lengths() {
    let sim = Sim::start(fast()).await;
    assert_eq!(out(&sim, json!({}), 20).await, (20, "length".into()));
    assert_eq!(
        out(&sim, json!({"max_completion_tokens": 7}), 20).await,
        (7, "length".into())
    );
    assert_eq!(out(&sim, json!({"min_tokens": 5}), 20).await, (20, "length".into()));
    // no max_tokens: the default
    let mut body = chat("a", 1, false);
    body.as_object_mut().unwrap().remove("max_tokens");
    let (_, v) = sim.post_json("/v1/chat/completions", &body).await;
    assert_eq!(v["usage"]["completion_tokens"], 256);
    sim.stop().await;

    let sim = Sim::start(SimConfig {
        natural_output: Some(5),
        ..fast()
    })
    .await;
    assert_eq!(out(&sim, json!({}), 20).await, (5, "stop".into()));
    assert_eq!(out(&sim, json!({}), 3).await, (3, "length".into()));
    assert_eq!(out(&sim, json!({"ignore_eos": true}), 20).await, (20, "length".into()));
    assert_eq!(out(&sim, json!({"min_tokens": 8}), 20).await, (8, "stop".into()));
    assert_eq!(out(&sim, json!({"min_tokens": 3}), 20).await, (5, "stop".into()));
    assert_eq!(out(&sim, json!({"min_tokens": 30}), 20).await, (20, "length".into()));
    // Anthropic: end_turn / max_tokens
    let s = sim.stream("/v1/messages", &anthropic("a", 20, true)).await;
    assert_eq!((s.tokens(), s.finish().as_deref()), (5, Some("end_turn")));
    let s = sim.stream("/v1/messages", &anthropic("a", 4, true)).await;
    assert_eq!((s.tokens(), s.finish().as_deref()), (4, Some("max_tokens")));
    sim.stop().await;

    // reasoning counts inside completion_tokens
    let sim = Sim::start(SimConfig {
        reasoning_tokens: 6,
        ..fast()
    })
    .await;
    let s = sim.stream("/v1/chat/completions", &chat("a", 10, true)).await;
    let u = s.usage_event().unwrap();
    assert_eq!(u["usage"]["completion_tokens"], 10);
    assert_eq!(u["usage"]["completion_tokens_details"]["reasoning_tokens"], 6);
    let reasoning = s
        .events
        .iter()
        .filter(|e| e.data.contains("\"reasoning_content\":\" think\""))
        .count();
    assert_eq!(reasoning, 6);
    sim.stop().await;
    let sim = Sim::start(SimConfig {
        reasoning_tokens: 3,
        reasoning_field: tokenswarm::sim::ReasoningField::Reasoning,
        ..fast()
    })
    .await;
    let s = sim.stream("/v1/chat/completions", &chat("a", 10, true)).await;
    assert_eq!(
        s.events
            .iter()
            .filter(|e| e.data.contains("\"reasoning\":\" think\""))
            .count(),
        3
    );
    let s = sim.stream("/v1/messages", &anthropic("a", 10, true)).await;
    let kinds: Vec<String> = s
        .events
        .iter()
        .filter_map(|e| e.json())
        .filter_map(|v| v["delta"]["type"].as_str().map(str::to_string))
        .collect();
    assert_eq!(kinds.iter().filter(|k| *k == "thinking_delta").count(), 3);
    assert_eq!(kinds.iter().filter(|k| *k == "signature_delta").count(), 1);
    assert_eq!(kinds.iter().filter(|k| *k == "text_delta").count(), 7);
    sim.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_400_with_api_shaped_body() {
    let sim = Sim::start(fast()).await;
    let chat_cases: &[(&str, Option<&str>)] = &[
        ("{not json", None),
        ("[1,2]", None),
        (r#"{"messages":[{"role":"user","content":"x"}]}"#, Some("model")),
        (
            r#"{"model":5,"messages":[{"role":"user","content":"x"}]}"#,
            Some("model"),
        ),
        (r#"{"model":"m"}"#, Some("messages")),
        (r#"{"model":"m","messages":"hi"}"#, Some("messages")),
        (r#"{"model":"m","messages":[]}"#, Some("messages")),
        (r#"{"model":"m","messages":[{"content":"x"}]}"#, Some("messages")),
        (
            r#"{"model":"m","messages":[{"role":"user","content":5}]}"#,
            Some("messages"),
        ),
        (
            r#"{"model":"m","messages":[{"role":"user","content":"x"}],"max_tokens":0}"#,
            Some("max_tokens"),
        ),
        (
            r#"{"model":"m","messages":[{"role":"user","content":"x"}],"max_tokens":-3}"#,
            Some("max_tokens"),
        ),
        (
            r#"{"model":"m","messages":[{"role":"user","content":"x"}],"max_tokens":"9"}"#,
            Some("max_tokens"),
        ),
        (
            r#"{"model":"m","messages":[{"role":"user","content":"x"}],"max_tokens":1.5}"#,
            Some("max_tokens"),
        ),
        (
            r#"{"model":"m","messages":[{"role":"user","content":"x"}],"stream":"yes"}"#,
            Some("stream"),
        ),
        (
            r#"{"model":"m","messages":[{"role":"user","content":"x"}],"stream_options":3}"#,
            Some("stream_options"),
        ),
        (
            r#"{"model":"m","messages":[{"role":"user","content":"x"}],"ignore_eos":1}"#,
            Some("ignore_eos"),
        ),
        (
            r#"{"model":"m","messages":[{"role":"user","content":"x"}],"min_tokens":-1}"#,
            Some("min_tokens"),
        ),
    ];
    for (body, field) in chat_cases {
        let (st, _, text) = sim.post("/v1/chat/completions", body).await;
        assert_eq!(st, 400, "{body}: {text}");
        let v: Value = serde_json::from_str(&text).unwrap();
        let e = &v["error"];
        assert_eq!(e["type"], "invalid_request_error", "{text}");
        for k in ["message", "type", "param", "code"] {
            assert!(e.get(k).is_some(), "{body}: no {k} in {text}");
        }
        if let Some(f) = field {
            assert_eq!(e["param"], *f, "{body}: {text}");
            assert!(e["message"].as_str().unwrap().contains(f), "{body}: {text}");
        }
    }
    let (st, _, text) = sim.post("/v1/completions", r#"{"model":"m","prompt":7}"#).await;
    assert_eq!(st, 400);
    assert!(text.contains("prompt"), "{text}");
    let msg_cases: &[(&str, Option<&str>)] = &[
        ("{oops", None),
        (
            r#"{"model":"m","messages":[{"role":"user","content":"x"}]}"#,
            Some("max_tokens"),
        ),
        (
            r#"{"model":"m","max_tokens":0,"messages":[{"role":"user","content":"x"}]}"#,
            Some("max_tokens"),
        ),
        (
            r#"{"max_tokens":5,"messages":[{"role":"user","content":"x"}]}"#,
            Some("model"),
        ),
        (r#"{"model":"m","max_tokens":5}"#, Some("messages")),
        (
            r#"{"model":"m","max_tokens":5,"messages":[{"role":"user"}]}"#,
            Some("messages"),
        ),
        (
            r#"{"model":"m","max_tokens":5,"system":7,"messages":[{"role":"user","content":"x"}]}"#,
            Some("system"),
        ),
    ];
    for (body, field) in msg_cases {
        let (st, _, text) = sim.post("/v1/messages", body).await;
        assert_eq!(st, 400, "{body}: {text}");
        let v: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["type"], "error");
        assert_eq!(v["error"]["type"], "invalid_request_error");
        if let Some(f) = field {
            assert!(v["error"]["message"].as_str().unwrap().contains(f), "{body}: {text}");
        }
    }
    // still serving
    assert_eq!(
        sim.post("/v1/chat/completions", &chat("a", 1, false).to_string())
            .await
            .0,
        200
    );
    let stats = sim.get_json("/sim/stats").await;
    assert_eq!(
        stats["by_endpoint"]["/v1/chat/completions"]["400"],
        chat_cases.len() as u64
    );
    sim.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn context_limit() {
    let sim = Sim::start(SimConfig {
        context_limit: 100,
        ..fast()
    })
    .await;
    let (st, v) = sim
        .post_json("/v1/chat/completions", &chat(&words(90, 1), 10, false))
        .await;
    assert_eq!(st, 200, "{v}");
    let (st, v) = sim
        .post_json("/v1/chat/completions", &chat(&words(90, 1), 11, true))
        .await;
    assert_eq!(st, 400);
    assert_eq!(v["error"]["code"], "context_length_exceeded");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("maximum context length is 100"),
        "{v}"
    );
    let (st, v) = sim.post_json("/v1/messages", &anthropic(&words(101, 1), 1, true)).await;
    assert_eq!(st, 400);
    assert_eq!(v["error"]["type"], "invalid_request_error");
    assert!(v["error"]["message"].as_str().unwrap().contains("too long"), "{v}");
    sim.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slots_queue_requests() {
    let sim = Sim::start(SimConfig {
        slots: 2,
        ttft_ms: 5.0,
        tpot_ms: 2.0,
        ..SimConfig::default()
    })
    .await;
    let futs = (0..6).map(|i| {
        let sim = &sim;
        async move {
            let s = sim
                .stream("/v1/chat/completions", &chat(&format!("q{i}"), 10, true))
                .await;
            s.usage_event().unwrap()["sim"]["queue_us"].as_u64().unwrap()
        }
    });
    let mut q = futures_util::future::join_all(futs).await;
    q.sort();
    // two run at once; the others wait for at least one full stream (~23 ms)
    assert!(q[1] < 5_000, "{q:?}");
    assert!(q[2] > 15_000 && q[5] > 30_000, "{q:?}");
    sim.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_slowdown_slows_decode() {
    let cfg = SimConfig {
        ttft_ms: 1.0,
        tpot_ms: 2.0,
        batch_slowdown: 0.5,
        ..SimConfig::default()
    };
    let sim = Sim::start(cfg).await;
    let alone = sim
        .stream("/v1/chat/completions", &chat("a", 20, true))
        .await
        .usage_event()
        .unwrap()["sim"]
        .clone();
    let body = chat("a", 20, true);
    let futs = (0..4).map(|_| sim.stream("/v1/chat/completions", &body));
    let together = futures_util::future::join_all(futs).await;
    let d = |s: &Value| s["e2e_us"].as_u64().unwrap() - s["ttft_us"].as_u64().unwrap();
    let slow = d(&together[0].usage_event().unwrap()["sim"]);
    // 4 streams: interval 2 ms × (1 + 0.5 × 3) = 5 ms
    assert!(
        slow as f64 > d(&alone) as f64 * 1.8,
        "alone {} together {slow}",
        d(&alone)
    );
    sim.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_count_requests_and_log_lines() {
    let dir = std::env::temp_dir().join(format!("tokenswarm-sim-log-{}", std::process::id()));
    let _ = std::fs::remove_file(&dir);
    let sim = Sim::start(SimConfig {
        log_requests: Some(dir.clone()),
        ..fast()
    })
    .await;
    let mut sent = 0u64;
    let mut out = 0u64;
    for i in 0..10 {
        let s = sim
            .stream("/v1/chat/completions", &chat(&format!("a b {i}"), 3, true))
            .await;
        assert!(s.done());
        out += 3;
        sent += 1;
    }
    for _ in 0..5 {
        assert_eq!(
            sim.post("/v1/messages", &anthropic("a b", 4, false).to_string())
                .await
                .0,
            200
        );
        out += 4;
        sent += 1;
    }
    for _ in 0..3 {
        assert_eq!(
            sim.post(
                "/v1/completions",
                r#"{"model":"m","prompt":"x y z","max_tokens":2,"stream":true}"#
            )
            .await
            .0,
            200
        );
        out += 2;
        sent += 1;
    }
    assert_eq!(sim.post("/v1/chat/completions", "{").await.0, 400);
    sent += 1;
    let st = sim.get_json("/sim/stats").await;
    assert_eq!(st["requests"], sent, "{st}");
    assert_eq!(st["by_endpoint"]["/v1/chat/completions"]["200"], 10);
    assert_eq!(st["by_endpoint"]["/v1/chat/completions"]["400"], 1);
    assert_eq!(st["by_endpoint"]["/v1/messages"]["200"], 5);
    assert_eq!(st["by_endpoint"]["/v1/completions"]["200"], 3);
    assert_eq!(st["output_tokens"], out);
    assert_eq!(st["prompt_tokens"], 10 * 3 + 5 * 2 + 3 * 3);
    assert_eq!(st["streams_completed"], 13);
    assert_eq!(st["faults"], json!({}));
    sim.post("/sim/reset", "").await;
    let st = sim.get_json("/sim/stats").await;
    assert_eq!(st["requests"], 0);
    assert_eq!(st["output_tokens"], 0);
    sim.stop().await; // flushes the log
    let text = std::fs::read_to_string(&dir).unwrap();
    let lines: Vec<Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len() as u64, sent);
    for k in [
        "arrival_unix_s",
        "endpoint",
        "model",
        "stream",
        "status",
        "prompt_tokens",
        "cached_tokens",
        "output_tokens",
        "queue_us",
        "ttft_us",
        "e2e_us",
        "fault",
    ] {
        assert!(lines[0].get(k).is_some(), "{k} missing: {}", lines[0]);
    }
    assert_eq!(lines.iter().filter(|l| l["status"] == 400).count(), 1);
    let _ = std::fs::remove_file(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn models_and_shutdown_with_open_stream() {
    let log = std::env::temp_dir().join(format!("tokenswarm-sim-shutdown-{}", std::process::id()));
    let _ = std::fs::remove_file(&log);
    let sim = Sim::start(SimConfig {
        ttft_ms: 1.0,
        tpot_ms: 50.0,
        log_requests: Some(log.clone()),
        ..SimConfig::default()
    })
    .await;
    let v = sim.get_json("/v1/models").await;
    assert_eq!(v["data"][0]["id"], "tokenswarm-sim");
    // a long stream is open while shutting down: serve still returns promptly
    let client = sim.client.clone();
    let url = format!("{}/v1/chat/completions", sim.base);
    let open = tokio::spawn(async move {
        let r = client.post(url).body(chat("a", 1000, true).to_string()).send().await;
        if let Ok(mut r) = r {
            while let Ok(Some(_)) = r.chunk().await {}
        }
    });
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    sim.stop().await;
    open.abort();
    // the cut stream was logged, flushed on shutdown
    let text = std::fs::read_to_string(&log).unwrap();
    let line: Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    // cut by the shutdown, not served to its end: stop did not wait for it
    assert_eq!(line["fault"], "shutdown");
    let served = line["output_tokens"].as_u64().unwrap();
    assert!(served > 10 && served < 1000, "{line}");
    let _ = std::fs::remove_file(&log);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_offsets_omitted_above_4096() {
    let sim = Sim::start(fast()).await;
    let s = sim.stream("/v1/chat/completions", &chat("a", 4096, true)).await;
    assert_eq!(
        s.usage_event().unwrap()["sim"]["token_offsets_us"]
            .as_array()
            .unwrap()
            .len(),
        4096
    );
    let s = sim.stream("/v1/chat/completions", &chat("a", 5000, true)).await;
    let v = s.usage_event().unwrap()["sim"].clone();
    assert!(v.get("token_offsets_us").is_none(), "{v}");
    assert_eq!(v["output_tokens"], 5000);
    assert!(v["e2e_us"].as_u64().unwrap() >= v["ttft_us"].as_u64().unwrap());
    let (_, v) = sim.post_json("/v1/messages", &anthropic("a", 5000, false)).await;
    assert!(v["sim"].get("token_offsets_us").is_none());
    sim.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jitter_is_seeded() {
    let mut runs = Vec::new();
    for seed in [5, 5, 6] {
        let cfg = SimConfig {
            seed,
            ttft_ms: 1.0,
            tpot_ms: 1.0,
            jitter: 0.5,
            batch_slowdown: 0.0,
            ..SimConfig::default()
        };
        let sim = Sim::start(cfg).await;
        let (_, v) = sim.post_json("/v1/chat/completions", &chat("a", 30, false)).await;
        let offs: Vec<i64> = v["sim"]["token_offsets_us"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_i64().unwrap())
            .collect();
        let gaps: Vec<i64> = offs.windows(2).map(|w| w[1] - w[0]).collect();
        assert!(gaps.iter().all(|g| (500..=1501).contains(g)), "{gaps:?}");
        assert!(
            gaps.iter().max().unwrap() - gaps.iter().min().unwrap() > 200,
            "{gaps:?}"
        );
        runs.push(gaps);
        sim.stop().await;
    }
    assert!(
        runs[0].iter().zip(&runs[1]).all(|(a, b)| (a - b).abs() <= 1),
        "same seed: {runs:?}"
    );
    assert!(
        runs[0].iter().zip(&runs[2]).any(|(a, b)| (a - b).abs() > 50),
        "other seed"
    );
}
