//! A real MQTT broker (rumqttd) for the tests of MQTT meters, run as a process of its own so a
//! test can stop and restart it: `mqtt-broker PORT` listens on 127.0.0.1:PORT (MQTT 3.1.1) until
//! killed.

fn main() {
    let port: u16 = match std::env::args().nth(1).map(|p| p.parse()) {
        Some(Ok(port)) => port,
        _ => {
            eprintln!("usage: mqtt-broker PORT");
            std::process::exit(2);
        }
    };
    let config = format!(
        r#"
id = 0

[router]
max_connections = 64
max_outgoing_packet_count = 200
max_segment_size = 1048576
max_segment_count = 10

[v4.1]
name = "v4-1"
listen = "127.0.0.1:{port}"
next_connection_delay_ms = 1

[v4.1.connections]
connection_timeout_ms = 60000
max_payload_size = 65536
max_inflight_count = 100
"#
    );
    let config: rumqttd::Config = match toml::from_str(&config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("mqtt-broker: bad config: {e}");
            std::process::exit(2);
        }
    };
    let mut broker = rumqttd::Broker::new(config);
    if let Err(e) = broker.start() {
        eprintln!("mqtt-broker: {e}");
        std::process::exit(1);
    }
}
