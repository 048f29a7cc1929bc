use serde_json::json;

use super::*;
use crate::ipc::frame::Dialect;
use crate::ipc::line::tests::json_value;
use crate::ipc::line::Decoder;
use proptest::prelude::*;

/// What the primary reads from a line a worker wrote.
fn read(line: &[u8]) -> FromWorker {
    let mut values = Vec::new();
    Decoder::default().feed(line, &mut values).unwrap();
    assert_eq!(values.len(), 1, "{}", line.escape_ascii());
    FromWorker::decode(values.pop().unwrap(), Dialect::Node).unwrap()
}

fn raw(line: &[u8]) -> Value {
    serde_json::from_slice(line).unwrap()
}

/// The lines Node 20.20.2 wrote as a cluster worker running `net.createServer().listen(8123)`
/// and `listen(0, '127.0.0.1', …)` then `server.close()` and `cluster.worker.disconnect()`
/// (captured from a real `node` with `NODE_UNIQUE_ID=1` on a socketpair).
const ONLINE: &[u8] = b"{\"cmd\":\"NODE_CLUSTER\",\"act\":\"online\",\"seq\":0}\n";
const QUERY_ANY: &[u8] = b"{\"cmd\":\"NODE_CLUSTER\",\"act\":\"queryServer\",\"index\":0,\"data\":null,\"address\":null,\"port\":8123,\"addressType\":4,\"backlog\":0,\"seq\":1}\n";
const QUERY_HOST: &[u8] = b"{\"cmd\":\"NODE_CLUSTER\",\"act\":\"queryServer\",\"index\":0,\"data\":null,\"address\":\"127.0.0.1\",\"port\":0,\"addressType\":4,\"flags\":0,\"backlog\":false,\"seq\":2}\n";
const LISTENING: &[u8] = b"{\"cmd\":\"NODE_CLUSTER\",\"act\":\"listening\",\"index\":0,\"data\":null,\"address\":null,\"port\":8123,\"addressType\":4,\"backlog\":0,\"seq\":3}\n";
const CLOSE: &[u8] = b"{\"cmd\":\"NODE_CLUSTER\",\"act\":\"close\",\"key\":\"127.0.0.1:0:4:undefined:0\",\"seq\":4}\n";
const EXITED: &[u8] = b"{\"cmd\":\"NODE_CLUSTER\",\"act\":\"exitedAfterDisconnect\",\"seq\":6}\n";
/// `onconnection` in `cluster/child.js`: the answer to a `newconn` the primary sent as seq 7.
const ACCEPTED: &[u8] = b"{\"cmd\":\"NODE_CLUSTER\",\"ack\":7,\"accepted\":true,\"seq\":9}\n";

#[test]
fn a_node_workers_cluster_messages_decode_as_node_20_writes_them() {
    assert_eq!(read(ONLINE), FromWorker::Cluster(NodeCluster::Online));
    assert_eq!(
        read(QUERY_ANY),
        FromWorker::Cluster(NodeCluster::QueryServer {
            seq: 1,
            index: 0,
            address: None,
            port: Some(8123),
            address_type: AddressType::Tcp4,
            fd: None,
            backlog: Some(0),
            flags: 0,
            data: Value::Null,
            key: "null:8123:4:undefined:0".into(),
            raw: raw(QUERY_ANY),
        })
    );
    let FromWorker::Cluster(NodeCluster::QueryServer {
        seq,
        address,
        port,
        backlog,
        key,
        ..
    }) = read(QUERY_HOST)
    else {
        panic!("not a queryServer");
    };
    assert_eq!(
        (seq, address.as_deref(), port, backlog, key.as_str()),
        (
            2,
            Some("127.0.0.1"),
            Some(0),
            None,
            "127.0.0.1:0:4:undefined:0"
        )
    );
    // The key a `close` names is the one the primary made from the query.
    assert_eq!(
        read(CLOSE),
        FromWorker::Cluster(NodeCluster::Close { seq: 4, key })
    );
    assert_eq!(
        read(LISTENING),
        FromWorker::Cluster(NodeCluster::Listening {
            seq: 3,
            address: None,
            port: Some(8123),
            address_type: AddressType::Tcp4,
            fd: None,
            raw: raw(LISTENING),
        })
    );
    assert_eq!(
        read(EXITED),
        FromWorker::Cluster(NodeCluster::ExitedAfterDisconnect { seq: 6 })
    );
    assert_eq!(
        read(ACCEPTED),
        FromWorker::Cluster(NodeCluster::Accepted {
            ack: 7,
            accepted: true,
            seq: 9
        })
    );
    assert_eq!(
        read(b"{\"cmd\":\"NODE_HANDLE_ACK\"}\n"),
        FromWorker::HandleAck { received: true }
    );
    assert_eq!(
        read(b"{\"cmd\":\"NODE_HANDLE_NACK\"}\n"),
        FromWorker::HandleAck { received: false }
    );
    // `process.send({n: 1}, socket)` to the primary.
    assert_eq!(
        read(b"{\"cmd\":\"NODE_HANDLE\",\"type\":\"net.Socket\",\"msg\":{\"n\":1}}\n"),
        FromWorker::UnsupportedHandle {
            handle_type: Some("net.Socket".into()),
            message: json!({"n": 1})
        }
    );
}

#[test]
fn other_addresses_make_the_keys_nodes_primary_makes() {
    let query = |fields: Value| {
        let mut message = json!({"cmd": "NODE_CLUSTER", "act": "queryServer", "seq": 0, "index": 1, "data": null});
        message
            .as_object_mut()
            .unwrap()
            .extend(fields.as_object().unwrap().clone());
        match from_worker(message) {
            FromWorker::Cluster(NodeCluster::QueryServer {
                key,
                address_type,
                port,
                fd,
                flags,
                ..
            }) => (key, address_type, port, fd, flags),
            other => panic!("{other:?}"),
        }
    };
    assert_eq!(
        query(json!({"address": "::", "port": 80, "addressType": 6, "flags": 1})),
        (
            ":::80:6:undefined:1".into(),
            AddressType::Tcp6,
            Some(80),
            None,
            1
        )
    );
    assert_eq!(
        query(json!({"address": "/tmp/app.sock", "port": -1, "addressType": -1})),
        (
            "/tmp/app.sock:-1:-1:undefined:1".into(),
            AddressType::Pipe,
            None,
            None,
            0
        )
    );
    assert_eq!(
        query(json!({"address": null, "port": -1, "addressType": -1, "fd": 5})),
        ("null:-1:-1:5:1".into(), AddressType::Pipe, None, Some(5), 0)
    );
    // `server.listen({ fd: 3 })`, as Node 20 writes it (the inherited socket).
    assert_eq!(
        query(json!({"address": null, "port": null, "addressType": null, "fd": 3, "backlog": 0})),
        (
            "null:null:null:3:1".into(),
            AddressType::Pipe,
            None,
            Some(3),
            0
        )
    );
    assert_eq!(
        query(json!({"address": "0.0.0.0", "port": 5353, "addressType": "udp4"})),
        (
            "0.0.0.0:5353:udp4:undefined:1".into(),
            AddressType::Udp4,
            Some(5353),
            None,
            0
        )
    );
}

#[test]
fn a_malformed_cluster_message_is_unknown_with_its_reason() {
    let unknown = |value: Value| match from_worker(value) {
        FromWorker::Cluster(NodeCluster::Unknown { act, reason, .. }) => (act, reason),
        other => panic!("{other:?}"),
    };
    let act = |name: &str| Some(name.to_owned());
    assert_eq!(
        unknown(
            json!({"cmd": "NODE_CLUSTER", "act": "queryServer", "seq": 0, "index": 0, "port": 70000, "addressType": 4})
        ),
        (act("queryServer"), "`port` must be 0…65535 or -1")
    );
    assert_eq!(
        unknown(
            json!({"cmd": "NODE_CLUSTER", "act": "listening", "seq": "1", "port": 1, "addressType": 4})
        ),
        (act("listening"), "`seq` must be a whole number")
    );
    assert_eq!(
        unknown(
            json!({"cmd": "NODE_CLUSTER", "act": "queryServer", "seq": 0, "index": 0, "port": 1, "addressType": 5})
        ),
        (
            act("queryServer"),
            "`addressType` must be 4, 6, -1, \"udp4\" or \"udp6\""
        )
    );
    assert_eq!(
        unknown(json!({"cmd": "NODE_CLUSTER", "act": "close", "seq": 1})),
        (act("close"), "`key` must be a string")
    );
    assert_eq!(
        unknown(json!({"cmd": "NODE_CLUSTER", "act": "shout", "seq": 1})),
        (act("shout"), "not an `act` Node's primary knows")
    );
    assert_eq!(
        unknown(json!({"cmd": "NODE_CLUSTER", "seq": 1})),
        (None, "neither an `act` nor an `ack`")
    );
}

proptest! {
    /// Whatever a worker puts in a cluster message, the primary reads a frame (never an error
    /// that would cut the channel, never a panic).
    #[test]
    fn any_cluster_message_decodes(fields in prop::collection::btree_map(
        prop_oneof![Just("act".to_owned()), Just("seq".to_owned()), Just("port".to_owned()),
                    Just("address".to_owned()), Just("addressType".to_owned()), Just("fd".to_owned()),
                    Just("index".to_owned()), Just("key".to_owned()), Just("ack".to_owned()), "\\PC{0,5}"],
        prop_oneof![json_value(), Just(json!("queryServer")), Just(json!("listening")), Just(json!(4))],
        0..10,
    )) {
        let mut message: Map<String, Value> = fields.into_iter().collect();
        message.insert("cmd".into(), "NODE_CLUSTER".into());
        let decoded = FromWorker::decode(Value::Object(message), Dialect::Node);
        prop_assert!(matches!(decoded, Ok(FromWorker::Cluster(_))), "{decoded:?}");
    }
}

#[test]
fn the_primarys_lines_are_as_nodes_primary_writes_them() {
    // `send(worker, {errno, key, ack: message.seq, data, ...reply}, handle)` in primary.js;
    // serde_json keeps an object's keys sorted, so its fields come in that order.
    let reply = json!({"errno": 0, "key": "null:8123:4:undefined:0", "ack": 1, "data": null});
    let message = reply.as_object().unwrap();
    assert_eq!(
        String::from_utf8(crate::ipc::frame::line(&HandleLine::new(
            "net.Native",
            ClusterLine { message, seq: 0 }
        )))
        .unwrap(),
        "{\"cmd\":\"NODE_HANDLE\",\"type\":\"net.Native\",\"msg\":{\"cmd\":\"NODE_CLUSTER\",\"ack\":1,\
         \"data\":null,\"errno\":0,\"key\":\"null:8123:4:undefined:0\",\"seq\":0}}\n"
    );
    // A `cmd` or `seq` in the message is the envelope's, written once.
    let disconnect = json!({"act": "disconnect", "cmd": "x", "seq": 9});
    assert_eq!(
        String::from_utf8(crate::ipc::frame::line(&ClusterLine {
            message: disconnect.as_object().unwrap(),
            seq: 4
        }))
        .unwrap(),
        "{\"cmd\":\"NODE_CLUSTER\",\"act\":\"disconnect\",\"seq\":4}\n"
    );
}
