//! The broker against real MQTT clients (rumqttc) and raw sockets over loopback.

use std::io::{Read, Write};
use std::time::Duration;

use bytes::BytesMut;
use edgefleet_broker::{Access, AuthFuture, Broker, Config, Credentials, allow_all};
use rumqttc::{
    AsyncClient, ConnectReturnCode, ConnectionError, Event, EventLoop, LastWill, MqttOptions, Packet, Publish, QoS,
};

const WAIT: Duration = Duration::from_secs(10);

fn opts(broker: &Broker, id: &str) -> MqttOptions {
    let mut o = MqttOptions::new(id, "127.0.0.1", broker.local_addr().port());
    o.set_keep_alive(Duration::from_secs(30));
    o.set_max_packet_size(1 << 20, 1 << 20);
    o
}

/// Connects and waits for CONNACK.
async fn connect(o: MqttOptions) -> (AsyncClient, EventLoop) {
    let (c, mut ev) = AsyncClient::new(o, 100);
    loop {
        match tokio::time::timeout(WAIT, ev.poll()).await.expect("CONNACK in time") {
            Ok(Event::Incoming(Packet::ConnAck(_))) => return (c, ev),
            Ok(_) => {}
            Err(e) => panic!("connect: {e}"),
        }
    }
}

/// Polls until `n` SUBACKs.
async fn subscribed(ev: &mut EventLoop, mut n: usize) {
    while n > 0 {
        if let Event::Incoming(Packet::SubAck(a)) =
            tokio::time::timeout(WAIT, ev.poll()).await.expect("SUBACK in time").expect("session")
        {
            assert!(a.return_codes.iter().all(|c| matches!(c, rumqttc::SubscribeReasonCode::Success(_))), "{a:?}");
            n -= 1;
        }
    }
}

/// Polls until the next PUBLISH.
async fn next_publish(ev: &mut EventLoop) -> Publish {
    loop {
        if let Event::Incoming(Packet::Publish(p)) =
            tokio::time::timeout(WAIT, ev.poll()).await.expect("PUBLISH in time").expect("session")
        {
            return p;
        }
    }
}

/// Polls until the next PUBACK (a client's publish is sent by its event loop).
async fn acked(ev: &mut EventLoop) {
    loop {
        if let Event::Incoming(Packet::PubAck(_)) =
            tokio::time::timeout(WAIT, ev.poll()).await.expect("PUBACK in time").expect("session")
        {
            return;
        }
    }
}

/// Polls until the session ends; returns why.
async fn ended(ev: &mut EventLoop) -> ConnectionError {
    loop {
        match tokio::time::timeout(WAIT, ev.poll()).await.expect("disconnected in time") {
            Ok(_) => {}
            Err(e) => return e,
        }
    }
}

/// Devices `d1`, `d2` may only use `d/<id>/`; `srv` (password `s3cret`) has full access.
fn fleet_auth() -> impl edgefleet_broker::Authenticator {
    |c: Credentials| -> AuthFuture {
        Box::pin(async move {
            match (c.client_id.as_str(), c.username.as_deref(), c.password.as_deref()) {
                ("srv", Some("srv"), Some("s3cret")) => Some(Access::Full),
                (id @ ("d1" | "d2"), Some(u), Some("pw")) if u == id => Some(Access::Limited {
                    publish: vec![format!("d/{id}/")],
                    subscribe: vec![format!("d/{id}/"), "root".into()],
                }),
                _ => None,
            }
        })
    }
}

#[tokio::test]
async fn routes_exact_and_wildcard_subscriptions_at_their_qos() {
    let broker = Broker::start(Config::default(), allow_all()).await.unwrap();
    let (sub, mut sev) = connect(opts(&broker, "sub")).await;
    sub.subscribe("a/b", QoS::AtLeastOnce).await.unwrap();
    sub.subscribe("w/+/up", QoS::AtMostOnce).await.unwrap();
    subscribed(&mut sev, 2).await;
    let (publ, mut pev) = connect(opts(&broker, "pub")).await;
    tokio::spawn(async move { while pev.poll().await.is_ok() {} });
    publ.publish("a/b", QoS::AtLeastOnce, false, b"one".to_vec()).await.unwrap();
    publ.publish("a/c", QoS::AtLeastOnce, false, b"nobody".to_vec()).await.unwrap();
    publ.publish("w/7/up", QoS::AtLeastOnce, false, b"two".to_vec()).await.unwrap();
    let p = next_publish(&mut sev).await;
    assert_eq!((p.topic.as_str(), &p.payload[..], p.qos, p.retain), ("a/b", &b"one"[..], QoS::AtLeastOnce, false));
    let p = next_publish(&mut sev).await;
    // Delivered at the lower of the publish's and the subscription's QoS.
    assert_eq!((p.topic.as_str(), &p.payload[..], p.qos), ("w/7/up", &b"two"[..], QoS::AtMostOnce));
    let s = broker.stats();
    assert_eq!((s.received, s.delivered, s.connections), (3, 2, 2));
}

#[tokio::test]
async fn retained_messages_reach_later_subscribers_until_cleared() {
    let broker = Broker::start(Config::default(), allow_all()).await.unwrap();
    let (publ, mut pev) = connect(opts(&broker, "pub")).await;
    publ.publish("m/1", QoS::AtLeastOnce, true, b"v1".to_vec()).await.unwrap();
    publ.publish("m/1", QoS::AtLeastOnce, true, b"v2".to_vec()).await.unwrap();
    publ.publish("m/2", QoS::AtLeastOnce, true, b"x".to_vec()).await.unwrap();
    let mut acks = 0;
    while acks < 3 {
        if let Event::Incoming(Packet::PubAck(_)) = pev.poll().await.unwrap() {
            acks += 1;
        }
    }
    let (sub, mut sev) = connect(opts(&broker, "sub")).await;
    sub.subscribe("m/1", QoS::AtLeastOnce).await.unwrap();
    let p = next_publish(&mut sev).await;
    assert_eq!((&p.payload[..], p.retain), (&b"v2"[..], true), "the last retained value, flagged retained");
    sub.subscribe("m/+", QoS::AtLeastOnce).await.unwrap();
    let mut got: Vec<_> = vec![next_publish(&mut sev).await, next_publish(&mut sev).await]
        .into_iter()
        .map(|p| (p.topic, p.payload.to_vec()))
        .collect();
    got.sort();
    assert_eq!(got, [("m/1".to_string(), b"v2".to_vec()), ("m/2".to_string(), b"x".to_vec())]);

    // An empty retained message clears it.
    publ.publish("m/1", QoS::AtLeastOnce, true, Vec::new()).await.unwrap();
    tokio::spawn(async move { while pev.poll().await.is_ok() {} });
    let p = next_publish(&mut sev).await; // the live (empty) message to the existing subscription
    assert!(p.payload.is_empty() && !p.retain);
    let (late, mut lev) = connect(opts(&broker, "late")).await;
    late.subscribe("m/1", QoS::AtLeastOnce).await.unwrap();
    late.subscribe("m/2", QoS::AtLeastOnce).await.unwrap();
    let p = next_publish(&mut lev).await;
    assert_eq!(p.topic, "m/2", "m/1 was cleared");
}

#[tokio::test]
async fn limited_clients_stay_inside_their_topics() {
    let broker = Broker::start(Config::default(), fleet_auth()).await.unwrap();
    let dev = |id: &str| {
        let mut o = opts(&broker, id);
        o.set_credentials(id, "pw");
        o
    };
    let mut so = opts(&broker, "srv");
    so.set_credentials("srv", "s3cret");
    let (srv, mut sev) = connect(so).await;
    srv.subscribe("d/+/up", QoS::AtLeastOnce).await.unwrap();
    subscribed(&mut sev, 1).await;

    // Wrong password, and a device id under someone else's user name: refused.
    let mut bad = dev("d1");
    bad.set_credentials("d1", "nope");
    let (_c, mut ev) = AsyncClient::new(bad, 10);
    let e = ended(&mut ev).await;
    assert!(
        matches!(e, ConnectionError::ConnectionRefused(ConnectReturnCode::BadUserNamePassword)),
        "wrong password: {e:?}"
    );

    // Inside its prefix: delivered.
    let (d1, mut d1ev) = connect(dev("d1")).await;
    d1.subscribe("d/d1/ack", QoS::AtLeastOnce).await.unwrap();
    subscribed(&mut d1ev, 1).await;
    d1.publish("d/d1/up", QoS::AtLeastOnce, false, b"hi".to_vec()).await.unwrap();
    acked(&mut d1ev).await;
    assert_eq!(next_publish(&mut sev).await.topic, "d/d1/up");
    srv.publish("d/d1/ack", QoS::AtLeastOnce, false, b"ok".to_vec()).await.unwrap();
    acked(&mut sev).await;
    assert_eq!(&next_publish(&mut d1ev).await.payload[..], b"ok");

    // Publishing as another device: disconnected, and nothing delivered.
    d1.publish("d/d2/up", QoS::AtLeastOnce, false, b"spoof".to_vec()).await.unwrap();
    ended(&mut d1ev).await;
    // A wildcard subscription (to read every device's downlinks): disconnected.
    let (d2, mut d2ev) = connect(dev("d2")).await;
    d2.subscribe("d/+/ack", QoS::AtLeastOnce).await.unwrap();
    ended(&mut d2ev).await;
    let (d2, mut d2ev) = connect(dev("d2")).await;
    d2.publish("d/d2/up", QoS::AtLeastOnce, false, b"real".to_vec()).await.unwrap();
    tokio::spawn(async move { while d2ev.poll().await.is_ok() {} });
    let p = next_publish(&mut sev).await;
    assert_eq!((p.topic.as_str(), &p.payload[..]), ("d/d2/up", &b"real"[..]), "the spoofed publish never arrived");
    assert_eq!(broker.stats().denied, 2);
    assert_eq!(broker.stats().refused, 1);
}

#[tokio::test]
async fn a_second_connection_with_the_same_client_id_takes_over() {
    let broker = Broker::start(Config::default(), allow_all()).await.unwrap();
    let (a, mut aev) = connect(opts(&broker, "same")).await;
    a.subscribe("t", QoS::AtLeastOnce).await.unwrap();
    subscribed(&mut aev, 1).await;
    let (b, mut bev) = connect(opts(&broker, "same")).await;
    ended(&mut aev).await;
    drop(a);
    b.subscribe("t", QoS::AtLeastOnce).await.unwrap();
    subscribed(&mut bev, 1).await;
    let (p, mut pev) = connect(opts(&broker, "p")).await;
    tokio::spawn(async move { while pev.poll().await.is_ok() {} });
    p.publish("t", QoS::AtLeastOnce, false, b"x".to_vec()).await.unwrap();
    assert_eq!(&next_publish(&mut bev).await.payload[..], b"x");
    assert_eq!(broker.stats().connections, 2);
}

#[tokio::test]
async fn the_last_will_is_published_when_a_client_vanishes() {
    let broker = Broker::start(Config::default(), allow_all()).await.unwrap();
    let (w, mut wev) = connect(opts(&broker, "watch")).await;
    w.subscribe("wills/#", QoS::AtLeastOnce).await.unwrap();
    subscribed(&mut wev, 1).await;
    let mut o = opts(&broker, "mortal");
    o.set_last_will(LastWill::new("wills/mortal", b"gone".to_vec(), QoS::AtLeastOnce, false));
    let (c, ev) = connect(o).await;
    drop((c, ev)); // the socket closes without DISCONNECT
    let p = next_publish(&mut wev).await;
    assert_eq!((p.topic.as_str(), &p.payload[..]), ("wills/mortal", &b"gone"[..]));
}

/// A subscriber with full access that reads slowly gets every message, in
/// order (the publisher waits); a limited one that stops reading is cut off.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_queues_apply_backpressure_or_disconnect() {
    let config = Config { queue: 8, ..Config::default() };
    let broker = Broker::start(config, |c: Credentials| -> AuthFuture {
        Box::pin(async move {
            Some(if c.client_id == "slow-dev" {
                Access::Limited { publish: vec![], subscribe: vec!["bulk".into()] }
            } else {
                Access::Full
            })
        })
    })
    .await
    .unwrap();
    let (s, mut sev) = connect(opts(&broker, "slow-srv")).await;
    s.subscribe("bulk", QoS::AtLeastOnce).await.unwrap();
    subscribed(&mut sev, 1).await;
    // The device subscribes, then its socket is never read again.
    let mut raw = std::net::TcpStream::connect(broker.local_addr()).unwrap();
    raw.write_all(&encode(Packet::Connect(rumqttc::Connect::new("slow-dev")))).unwrap();
    raw.write_all(&encode(Packet::Subscribe(rumqttc::Subscribe::new("bulk", QoS::AtLeastOnce)))).unwrap();
    let mut head = [0u8; 9]; // CONNACK (4) + SUBACK (5)
    raw.read_exact(&mut head).unwrap();
    assert_eq!((head[0], head[4]), (0x20, 0x90));

    let (p, mut pev) = connect(opts(&broker, "producer")).await;
    const N: usize = 3000;
    let payload = vec![7u8; 2048]; // 6 MB in all: more than the socket buffers hold
    tokio::spawn(async move {
        for i in 0..N {
            let mut m = payload.clone();
            m[..8].copy_from_slice(&(i as u64).to_le_bytes());
            p.publish("bulk", QoS::AtLeastOnce, false, m).await.unwrap();
        }
    });
    tokio::spawn(async move { while pev.poll().await.is_ok() {} });
    for i in 0..N {
        let m = next_publish(&mut sev).await;
        assert_eq!(u64::from_le_bytes(m.payload[..8].try_into().unwrap()), i as u64, "in order, none lost");
        if i % 500 == 0 {
            tokio::time::sleep(Duration::from_millis(50)).await; // a slow reader
        }
    }
    let s = broker.stats();
    assert_eq!(s.overflows, 1, "the stuck device was disconnected once: {s:?}");
    assert_eq!(s.connections, 2);
}

fn encode(p: Packet) -> Vec<u8> {
    let mut b = BytesMut::new();
    p.write(&mut b, 1 << 20).unwrap();
    b.to_vec()
}

/// Reads until EOF; panics if the broker keeps the socket open.
fn read_to_close(s: &mut std::net::TcpStream) -> Vec<u8> {
    s.set_read_timeout(Some(WAIT)).unwrap();
    let mut v = Vec::new();
    s.read_to_end(&mut v).expect("the broker closes the connection");
    v
}

#[tokio::test]
async fn bad_input_is_refused_or_disconnected() {
    let config = Config { max_packet: 4096, connect_timeout: Duration::from_millis(300), ..Config::default() };
    let broker = Broker::start(config, allow_all()).await.unwrap();
    let addr = broker.local_addr();
    tokio::task::spawn_blocking(move || {
        // MQTT 5 CONNECT: refused with "unacceptable protocol version".
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        s.write_all(&[0x10, 13, 0, 4, b'M', b'Q', b'T', b'T', 5, 2, 0, 30, 0, 0, 1, b'x']).unwrap();
        assert_eq!(read_to_close(&mut s), [0x20, 2, 0, 1]);

        // Garbage instead of CONNECT, and a packet over the size limit: closed.
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        s.write_all(&[0xff; 16]).unwrap();
        assert!(read_to_close(&mut s).is_empty());
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        s.write_all(&encode(Packet::Connect(rumqttc::Connect::new("big")))).unwrap();
        s.write_all(&encode(Packet::Publish(Publish::new("t", QoS::AtMostOnce, vec![0; 5000])))).unwrap();
        assert_eq!(read_to_close(&mut s), [0x20, 2, 0, 0], "CONNACK, then closed");

        // Silence: no CONNECT within the connect timeout.
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        assert!(read_to_close(&mut s).is_empty());

        // A keep-alive of 1 s and nothing after CONNECT: closed after 1.5 s.
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        let mut c = rumqttc::Connect::new("sleepy");
        c.keep_alive = 1;
        s.write_all(&encode(Packet::Connect(c))).unwrap();
        let t = std::time::Instant::now();
        assert_eq!(read_to_close(&mut s), [0x20, 2, 0, 0]);
        assert!(t.elapsed() >= Duration::from_millis(1400), "{:?}", t.elapsed());

        // A wildcard in a PUBLISH topic: closed.
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        s.write_all(&encode(Packet::Connect(rumqttc::Connect::new("wild")))).unwrap();
        s.write_all(&encode(Packet::Publish(Publish::new("a/+", QoS::AtMostOnce, vec![1])))).unwrap();
        assert_eq!(read_to_close(&mut s), [0x20, 2, 0, 0]);
    })
    .await
    .unwrap();
    assert_eq!(broker.stats().connections, 0);
}

#[test]
fn runs_on_its_own_thread_and_stops_when_dropped() {
    let broker = Broker::start_thread(Config::default(), allow_all()).unwrap();
    let addr = broker.local_addr();
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.write_all(&encode(Packet::Connect(rumqttc::Connect::new("t")))).unwrap();
    let mut ack = [0u8; 4];
    s.read_exact(&mut ack).unwrap();
    assert_eq!(ack, [0x20, 2, 0, 0]);
    drop(broker);
    assert!(read_to_close(&mut s).is_empty());
    assert!(std::net::TcpStream::connect(addr).is_err(), "no longer listening");
}
