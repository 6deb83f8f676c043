//! Multi-turn sessions: the conversation a session resends each turn, and
//! what a perfect prefix cache would serve of it.
//!
//! Turn 1 sends the scenario's own prompt (shared prefix, unique part,
//! task: [`super::prompt`]). Each later turn appends the server's answer to
//! the previous turn (as the `assistant` message, text as streamed:
//! [`super::answer`]) and a new user message of `turn_length` tokens
//! (unique per session and turn, ending with the task sentence when it has
//! room), and sends the whole conversation. Everything before the newest
//! user message is then a prefix the server has seen, so a prefix cache
//! that also keeps generated tokens (vLLM's and SGLang's do) can serve it.
//!
//! # The ideal
//! [`Conversation::ideal_cached`] is what a perfect prefix cache would serve
//! a turn, in the server's own token counts: turn 1 the scenario's
//! `prefix_length` (shared by every request of the scenario), turn k the
//! previous turn's input plus output tokens as the server reported them
//! (its `usage`, else the targets). Real caches work in blocks (vLLM: 16
//! tokens) and a chat template adds a few tokens per message, so the
//! server's cached tokens sit a little below the ideal even when nothing is
//! evicted; their ratio is the figure to watch (`cached / ideal`).
//!
//! # Bounds
//! A session has at most `scenario::MAX_TURNS` turns and each answer at
//! most [`super::answer::MAX_ANSWER_BYTES`], so a conversation is bounded;
//! it is dropped when the session ends.

use bytes::Bytes;

use super::LlmError;
use super::request::{Role, conversation_body};
use crate::outcome::Outcome;
use crate::scenario::Scenario;

/// The messages of one session so far.
#[derive(Debug, Default)]
pub struct Conversation {
    messages: Vec<(Role, String)>,
    /// The previous turn's input and output tokens (server's counts).
    previous: Option<(u64, u64)>,
}

impl Conversation {
    pub fn new() -> Conversation {
        Conversation::default()
    }

    /// Turns sent so far.
    pub fn turns(&self) -> usize {
        self.messages.iter().filter(|(r, _)| *r == Role::User).count()
    }

    /// Adds the next user message.
    pub fn ask(&mut self, text: String) {
        self.messages.push((Role::User, text));
    }

    /// Adds the server's answer to the last user message, with what the
    /// turn's outcome says it cost (for [`Conversation::ideal_cached`]).
    pub fn answer(&mut self, scenario: &Scenario, text: String, outcome: &Outcome) {
        let input = outcome
            .usage
            .input_tokens
            .unwrap_or_else(|| scenario.target_prompt_tokens(self.previous_turn()));
        self.previous = Some((input, outcome.output_tokens()));
        self.messages.push((Role::Assistant, text));
    }

    fn previous_turn(&self) -> u32 {
        u32::try_from(self.turns().saturating_sub(1)).unwrap_or(u32::MAX)
    }

    /// The body of the next turn: every message so far.
    pub fn body(&self, scenario: &Scenario) -> Result<Bytes, LlmError> {
        let messages: Vec<(Role, &str)> = self.messages.iter().map(|(r, t)| (*r, t.as_str())).collect();
        conversation_body(scenario, &messages)
    }

    /// What a perfect prefix cache would serve the turn about to be sent
    /// (see the module docs).
    pub fn ideal_cached(&self, scenario: &Scenario) -> u64 {
        match self.previous {
            None => scenario.prefix_length,
            Some((input, output)) => input.saturating_add(output),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outcome::Usage;
    use crate::scenario::TestConfig;

    #[test]
    fn ideal_is_the_shared_prefix_then_the_whole_previous_turn() {
        let cfg = TestConfig::from_yaml(
            "scenarios:\n  - {name: S, provider: openai-chat, model: m, prompt_length: 40, prefix_length: 16, output_length: 8, session: {turns: 3}}\n",
        )
        .unwrap();
        let s = &cfg.scenarios[0];
        let mut c = Conversation::new();
        c.ask("A B".into());
        assert_eq!(c.ideal_cached(s), 16);
        let served = Outcome {
            usage: Usage {
                input_tokens: Some(41),
                output_tokens: Some(7),
                ..Usage::default()
            },
            ..Outcome::default()
        };
        c.answer(s, " tok".into(), &served);
        c.ask("C".into());
        assert_eq!(c.ideal_cached(s), 48);
        assert_eq!(c.turns(), 2);
        // without usage: the targets (turn 2 = 40 + 8 + 24) and counted chunks
        let counted = Outcome {
            output_chunks: 8,
            ..Outcome::default()
        };
        c.answer(s, " tok".into(), &counted);
        assert_eq!(c.ideal_cached(s), 72 + 8);
        let body: serde_json::Value = serde_json::from_slice(&c.body(s).unwrap()).unwrap();
        assert_eq!(body["messages"].as_array().unwrap().len(), 4);
        assert_eq!(body["messages"][1]["role"], "assistant");
    }
}
