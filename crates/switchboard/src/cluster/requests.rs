//! Questions this node asked the others and is waiting on: each has an id, how many answers it
//! expects (the other nodes up when it was asked) and the answers so far; it is done when all
//! came, or, by the asker's timeout, with those that did.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;
use serde_json::Value;
use tokio::sync::oneshot;

struct Waiting {
    expected: usize,
    answers: Vec<Value>,
    done: Option<oneshot::Sender<Vec<Value>>>,
}

/// The questions waiting for answers.
#[derive(Default)]
pub struct Requests {
    waiting: Mutex<HashMap<String, Waiting>>,
    next: AtomicU64,
}

impl Requests {
    /// A new question id, unique in the cluster (it starts with this node's id).
    pub fn next_id(&self, uid: &str) -> String {
        format!("{uid}-{}", self.next.fetch_add(1, Ordering::Relaxed) + 1)
    }

    /// Starts waiting for `expected` answers to `id`; the receiver gets them all.
    pub fn wait(&self, id: &str, expected: usize) -> oneshot::Receiver<Vec<Value>> {
        let (done, answered) = oneshot::channel();
        self.waiting.lock().insert(
            id.to_owned(),
            Waiting {
                expected,
                answers: Vec::new(),
                done: Some(done),
            },
        );
        answered
    }

    /// One answer came; an answer to a question no longer waited on is dropped.
    pub fn answer(&self, id: &str, answer: Value) {
        let mut waiting = self.waiting.lock();
        let Some(question) = waiting.get_mut(id) else {
            return;
        };
        question.answers.push(answer);
        if question.answers.len() >= question.expected
            && let Some(question) = waiting.remove(id)
            && let Some(done) = question.done
        {
            let _ = done.send(question.answers);
        }
    }

    /// Stops waiting on `id`; answers (expected, the answers that came).
    pub fn give_up(&self, id: &str) -> Option<(usize, Vec<Value>)> {
        self.waiting
            .lock()
            .remove(id)
            .map(|question| (question.expected, question.answers))
    }

    /// How many questions are waiting.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.waiting.lock().len()
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[tokio::test]
    async fn a_question_is_done_when_every_node_answered() {
        let requests = Requests::default();
        let id = requests.next_id("n1");
        assert!(id.starts_with("n1-"));
        let answered = requests.wait(&id, 2);
        requests.answer(&id, json!(1));
        requests.answer("n1-other", json!(9));
        requests.answer(&id, json!(2));
        assert_eq!(answered.await.expect("answered"), vec![json!(1), json!(2)]);
        assert_eq!(requests.len(), 0);
    }

    #[test]
    fn giving_up_keeps_the_answers_that_came() {
        let requests = Requests::default();
        let id = requests.next_id("n1");
        let _answered = requests.wait(&id, 3);
        requests.answer(&id, json!("a"));
        assert_eq!(requests.give_up(&id), Some((3, vec![json!("a")])));
        assert_eq!(requests.give_up(&id), None);
    }
}
