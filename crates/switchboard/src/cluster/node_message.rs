//! Switchboard's own node protocol, as typed messages, encoded and decoded with no I/O: what
//! the Socket.IO adapters have no words for (an operation on a user's sockets wherever they
//! are, who is online where, a node leaving, a question every node answers). JSON on
//! `<key>-switchboard#` (every node) and answers on `<key>-switchboard#<uid>#` (the asking
//! node), channels other servers do not listen to.
//!
//! Every message says which node sent it (`uid`) and what it is (`kind`):
//! - `user`: emit to a user's sockets and rooms (`op: "emit"`) or disconnect them
//!   (`op: "disconnect"`);
//! - `presence`: how one user is connected to the sender now; `presence_all`: every user of the
//!   sender and its address (also its heartbeat); `presence_sync`: "tell me all yours"; `bye`: the sender leaves;
//! - `query`: a [`Question`] every node answers with a [`NodeReply`] carrying its `requestId`;
//! - `access`: a user blocked or a token revoked (or either lifted): an [`AccessChange`];
//! - `session_taken`: the sender restored a socket's session; its old copy elsewhere ends.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::hub::UserHere;
use crate::hub::access::AccessChange;
use crate::hub::adapter::UserOp;
use crate::hub::reads::Question;

/// One message of the node protocol.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum NodeMessage {
    /// An operation on `user`'s sockets in namespace `nsp`, on every node.
    User {
        uid: String,
        nsp: String,
        user: String,
        #[serde(flatten)]
        op: UserOp,
    },
    /// How `user` is connected to the sender now.
    Presence {
        uid: String,
        user: String,
        here: UserHere,
    },
    /// Every user of the sender, and where it serves (`host:port`, when it has said where);
    /// sent when it (re)connects and as its heartbeat.
    PresenceAll {
        uid: String,
        users: BTreeMap<String, UserHere>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        address: Option<String>,
    },
    /// The sender asks every node for its users.
    PresenceSync { uid: String },
    /// The sender is leaving (its users are gone with it).
    Bye { uid: String },
    /// A question for every other node, answered on the sender's reply channel.
    Query {
        uid: String,
        #[serde(rename = "requestId")]
        request_id: String,
        question: Question,
    },
    /// A change of the blocked users and revoked tokens.
    Access { uid: String, change: AccessChange },
    /// The sender restored socket `sid` of namespace `nsp` (from the shared store or its own
    /// saved copy): a node that still has it connected drops it, and a node that saved a copy
    /// of session `pid` forgets it (a copy older than what the client has since become).
    SessionTaken {
        uid: String,
        nsp: String,
        sid: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pid: Option<String>,
    },
}

impl NodeMessage {
    /// The node that sent it.
    pub fn sender(&self) -> &str {
        match self {
            Self::User { uid, .. }
            | Self::Presence { uid, .. }
            | Self::PresenceAll { uid, .. }
            | Self::PresenceSync { uid }
            | Self::Bye { uid }
            | Self::Query { uid, .. }
            | Self::Access { uid, .. }
            | Self::SessionTaken { uid, .. } => uid,
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        // A message of these types always serialises (string keys, no fallible values).
        serde_json::to_vec(self).unwrap_or_default()
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(bytes)
    }
}

/// One node's answer to a [`NodeMessage::Query`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeReply {
    #[serde(rename = "requestId")]
    pub request_id: String,
    pub answer: Value,
}

impl NodeReply {
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(bytes)
    }
}

/// Every node listens here.
pub fn node_channel(key: &str) -> String {
    format!("{key}-switchboard#")
}

/// The node `uid` is answered here.
pub fn reply_channel(key: &str, uid: &str) -> String {
    format!("{key}-switchboard#{uid}#")
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::hub::Announced;

    fn round_trip(message: NodeMessage) {
        let decoded = NodeMessage::decode(&message.encode()).expect("decodes");
        assert_eq!(decoded, message);
    }

    #[test]
    fn every_message_comes_back_as_it_was_sent() {
        round_trip(NodeMessage::User {
            uid: "a1".into(),
            nsp: "/".into(),
            user: "ada".into(),
            op: UserOp::Emit {
                rooms: vec!["r".into()],
                except: vec!["x".into()],
                event: "hi".into(),
                args: vec![json!({"n": 1})],
            },
        });
        round_trip(NodeMessage::User {
            uid: "a1".into(),
            nsp: "/chat".into(),
            user: "ada".into(),
            op: UserOp::Disconnect { close: true },
        });
        let here = UserHere {
            online: true,
            namespaces: vec!["/".into()],
            announced: Some(Announced::Online),
        };
        round_trip(NodeMessage::Presence {
            uid: "a1".into(),
            user: "ada".into(),
            here: here.clone(),
        });
        round_trip(NodeMessage::PresenceAll {
            uid: "a1".into(),
            users: BTreeMap::from([("ada".to_owned(), here.clone())]),
            address: Some("10.0.0.1:3000".into()),
        });
        round_trip(NodeMessage::PresenceAll {
            uid: "a1".into(),
            users: BTreeMap::from([("ada".to_owned(), here)]),
            address: None,
        });
        round_trip(NodeMessage::PresenceSync { uid: "a1".into() });
        round_trip(NodeMessage::Bye { uid: "a1".into() });
        round_trip(NodeMessage::Query {
            uid: "a1".into(),
            request_id: "a1-7".into(),
            question: Question::RoomUsers {
                namespace: "/".into(),
                room: "lobby".into(),
            },
        });
        round_trip(NodeMessage::Query {
            uid: "a1".into(),
            request_id: "a1-8".into(),
            question: Question::Stats,
        });
        round_trip(NodeMessage::Access {
            uid: "a1".into(),
            change: crate::hub::access::AccessChange::Add {
                entry: crate::hub::access::AccessEntry::Block {
                    user: "ada".into(),
                    until: 1_900_000_000_000,
                    reason: Some("abuse".into()),
                },
            },
        });
        round_trip(NodeMessage::SessionTaken {
            uid: "a1".into(),
            nsp: "/".into(),
            sid: "s1".into(),
            pid: Some("p1".into()),
        });
        round_trip(NodeMessage::SessionTaken {
            uid: "a1".into(),
            nsp: "/".into(),
            sid: "s1".into(),
            pid: None,
        });
        round_trip(NodeMessage::Access {
            uid: "a1".into(),
            change: crate::hub::access::AccessChange::Remove {
                key: crate::hub::access::AccessKey::Token { jti: "t1".into() },
            },
        });
    }

    #[test]
    fn the_wire_shapes_stay_as_older_nodes_wrote_them() {
        let emit = NodeMessage::User {
            uid: "a1".into(),
            nsp: "/".into(),
            user: "ada".into(),
            op: UserOp::Emit {
                rooms: vec![],
                except: vec![],
                event: "hi".into(),
                args: vec![json!(1)],
            },
        };
        let value: Value = serde_json::from_slice(&emit.encode()).expect("json");
        assert_eq!(value["kind"], "user");
        assert_eq!(value["op"], "emit");
        assert_eq!(value["event"], "hi");
        let older = br#"{"kind":"presence","uid":"b2","user":"ada","here":{"online":false,"namespaces":[],"announced":"offline"}}"#;
        let NodeMessage::Presence { here, .. } = NodeMessage::decode(older).expect("decodes")
        else {
            panic!("not a presence message");
        };
        assert_eq!(here.announced, Some(Announced::Offline));
        let query = br#"{"kind":"query","uid":"b2","requestId":"b2-1","question":{"kind":"user","user":"ada"}}"#;
        assert!(matches!(
            NodeMessage::decode(query),
            Ok(NodeMessage::Query {
                question: Question::User { .. },
                ..
            })
        ));
    }

    #[test]
    fn a_question_of_a_newer_node_is_still_a_question() {
        let newer =
            br#"{"kind":"query","uid":"b2","requestId":"b2-1","question":{"kind":"tomorrow"}}"#;
        assert!(matches!(
            NodeMessage::decode(newer),
            Ok(NodeMessage::Query {
                question: Question::Unknown,
                ..
            })
        ));
    }

    #[test]
    fn malformed_messages_are_errors_not_panics() {
        for bad in [
            &b""[..],
            b"null",
            b"[]",
            b"{}",
            b"{\"kind\":\"user\"}",
            b"{\"kind\":\"user\",\"uid\":\"a\",\"nsp\":\"/\",\"user\":\"u\",\"op\":\"explode\"}",
            b"{\"kind\":\"presence\",\"uid\":1}",
            b"{\"kind\":\"bye\"}",
            b"{\"kind\":\"access\",\"uid\":\"a\",\"change\":{\"change\":\"add\",\"entry\":{\"kind\":\"block\"}}}",
            b"\xff\xfe",
        ] {
            assert!(NodeMessage::decode(bad).is_err(), "{bad:?}");
        }
        assert!(NodeReply::decode(b"{\"answer\":1}").is_err());
    }
}
