//! The LLM client's side of a session turn and a dataset request, against
//! the scripted server: what goes on the wire and what text comes back.

#[path = "llm_server.rs"]
mod llm_server;

use llm_server::*;
use reqwest::header::HeaderValue;
use tokenswarm::llm::answer::AnswerText;
use tokenswarm::llm::request::{Role, conversation_body, messages_body};
use tokenswarm::llm::{LlmClient, PreparedScenario};
use tokenswarm::scenario::{Provider, Session, Timeouts};
use tokio_util::sync::CancellationToken;

fn stream(words: &[&str]) -> Vec<Step> {
    let mut steps = vec![Step::Head(200, "text/event-stream"), Step::Chunk(role())];
    for w in words {
        steps.push(Step::Chunk(token(w)));
    }
    steps.extend([
        Step::Chunk(finish("length")),
        Step::Chunk(usage(9, words.len() as u64)),
        Step::Chunk(done()),
        Step::End,
    ]);
    steps
}

/// Proves: a session turn carries the conversation as its body, the
/// session id in the scenario's `affinity_header` and its own
/// `x-request-id`, and the answer's streamed text is captured for the next
/// turn; a scenario without `affinity_header` sends no session header.
#[tokio::test]
async fn a_turn_sends_the_conversation_and_session_header_and_keeps_the_answer() {
    let server = start(|_| stream(&[" one", " two"])).await;
    let client = LlmClient::new(&Timeouts::default(), 4).unwrap();
    let mut s = scenario(Provider::OpenaiChat);
    s.session = Some(Session {
        turns: 2,
        turn_length: None,
        think_time: Default::default(),
        affinity_header: Some("x-session-id".into()),
    });
    let p = PreparedScenario::new(&s, &server.host()).unwrap();
    let body = conversation_body(&s, &[(Role::User, "A B"), (Role::Assistant, " x"), (Role::User, "C")]).unwrap();
    let mut answer = AnswerText::new(Provider::OpenaiChat);
    let o = client
        .execute_turn(
            &p,
            0x2a,
            body.clone(),
            Some(HeaderValue::from_static("00000000000000ff")),
            &mut answer,
            &CancellationToken::new(),
        )
        .await;
    assert!(o.failure.is_none(), "{o:?}");
    assert_eq!(answer.text(), " one two");
    let seen = server.seen.lock().unwrap().clone();
    let head = seen[0].head.to_ascii_lowercase();
    assert!(head.contains("x-session-id: 00000000000000ff"), "{head}");
    assert!(head.contains("x-request-id: 000000000000002a"), "{head}");
    assert_eq!(seen[0].body, body.to_vec());

    s.session.as_mut().unwrap().affinity_header = None;
    let p = PreparedScenario::new(&s, &server.host()).unwrap();
    let mut answer = AnswerText::new(Provider::OpenaiChat);
    let session = Some(HeaderValue::from_static("ab"));
    let o = client
        .execute_turn(&p, 1, body, session, &mut answer, &CancellationToken::new())
        .await;
    assert!(o.failure.is_none(), "{o:?}");
    let head = server.seen.lock().unwrap()[1].head.to_ascii_lowercase();
    assert!(!head.contains("x-session-id"), "{head}");
}

/// Proves: a dataset request's body holds the record's messages and its
/// own `max_tokens` (Anthropic: the system text in the top-level `system`
/// field, not among the messages).
#[tokio::test]
async fn dataset_bodies_carry_their_messages_and_max_tokens() {
    let server = start(|_| stream(&[" a"])).await;
    let client = LlmClient::new(&Timeouts::default(), 4).unwrap();
    let s = scenario(Provider::OpenaiChat);
    let p = PreparedScenario::new(&s, &server.host()).unwrap();
    let msgs = [(Role::System, "be \"brief\""), (Role::User, "why?")];
    let body = messages_body(&s, &msgs, 7).unwrap();
    let o = client.execute_body(&p, 3, body, 7, &CancellationToken::new()).await;
    assert!(o.failure.is_none(), "{o:?}");
    let sent: serde_json::Value = serde_json::from_slice(&server.seen.lock().unwrap()[0].body).unwrap();
    assert_eq!(sent["max_tokens"], 7);
    assert_eq!(sent["messages"][0]["role"], "system");
    assert_eq!(sent["messages"][0]["content"], "be \"brief\"");
    assert_eq!(sent["messages"][1]["content"], "why?");

    let a = scenario(Provider::Anthropic);
    let v: serde_json::Value = serde_json::from_slice(&messages_body(&a, &msgs, 9).unwrap()).unwrap();
    assert_eq!(v["system"], "be \"brief\"");
    assert_eq!(v["messages"].as_array().unwrap().len(), 1);
    assert_eq!(v["messages"][0]["role"], "user");
    assert_eq!(v["max_tokens"], 9);
}
