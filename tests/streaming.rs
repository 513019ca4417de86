//! Streamed replies through the real proxy: SSE of each provider's shape and Ollama's NDJSON, with the
//! hostile text spelled over many events and the events cut across TCP writes; LF and CRLF; gzip;
//! byte-exact forwarding; a finding logged while the stream is still open. 127.0.0.1 only.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::StatusCode;
use http_body_util::BodyExt;
use hyper::body::Body as _;
use picoclaw_traffic_guardian::detect::{Direction, Location, ThreatType};

use crate::util::*;

/// Splits `s` into tokens of 1 to 7 characters (a fixed cycle), as a model streams it.
fn tokens(s: &str) -> Vec<String> {
    let chars: Vec<char> = s.chars().collect();
    let mut out = Vec::new();
    let (mut i, mut n) = (0, 1);
    while i < chars.len() {
        let end = (i + n).min(chars.len());
        out.push(chars[i..end].iter().collect());
        i = end;
        n = n % 7 + 1;
    }
    out
}

fn js(s: &str) -> String {
    serde_json::to_string(s).expect("json string")
}

/// `{"command": <payload>}`, as a tool call's arguments.
fn args(payload: &str) -> String {
    format!("{{\"command\": {}}}", js(payload))
}

type Events = Vec<(Option<&'static str>, String)>;

/// OpenAI chat completions: `choices[0].delta.content` and `delta.tool_calls[0].function.arguments`.
fn openai(payload: &str, tool: bool) -> Events {
    let mut ev: Events = vec![(None, r#"{"id":"c","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}]}"#.into())];
    if tool {
        ev.push((None, r#"{"id":"c","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"call_1","type":"function","function":{"name":"exec","arguments":""}}]},"finish_reason":null}]}"#.into()));
        for t in tokens(&args(payload)) {
            ev.push((None, format!(r#"{{"id":"c","choices":[{{"index":0,"delta":{{"tool_calls":[{{"index":0,"function":{{"arguments":{}}}}}]}},"finish_reason":null}}]}}"#, js(&t))));
        }
        ev.push((None, r#"{"id":"c","choices":[{"index":0,"delta":{},"finish_reason":"tool_calls"}]}"#.into()));
    } else {
        for t in tokens(&format!("Run this: {payload} and enjoy")) {
            ev.push((
                None,
                format!(
                    r#"{{"id":"c","choices":[{{"index":0,"delta":{{"content":{}}},"finish_reason":null}}]}}"#,
                    js(&t)
                ),
            ));
        }
        ev.push((None, r#"{"id":"c","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}"#.into()));
    }
    ev.push((None, "[DONE]".into()));
    ev
}

/// Anthropic messages: `content_block_delta` with `text_delta` or `input_json_delta`.
fn anthropic(payload: &str, tool: bool) -> Events {
    let mut ev: Events = vec![(
        Some("message_start"),
        r#"{"type":"message_start","message":{"id":"m","type":"message","role":"assistant","content":[],"model":"claude"}}"#.into(),
    )];
    let (start, delta, text) = if tool {
        (
            r#"{"type":"content_block_start","index":0,"content_block":{"type":"tool_use","id":"t","name":"bash","input":{}}}"#,
            "input_json_delta",
            args(payload),
        )
    } else {
        (
            r#"{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}"#,
            "text_delta",
            format!("Run this: {payload} and enjoy"),
        )
    };
    ev.push((Some("content_block_start"), start.into()));
    ev.push((Some("ping"), r#"{"type": "ping"}"#.into()));
    let field = if tool { "partial_json" } else { "text" };
    for t in tokens(&text) {
        ev.push((
            Some("content_block_delta"),
            format!(r#"{{"type":"content_block_delta","index":0,"delta":{{"type":"{delta}","{field}":{}}}}}"#, js(&t)),
        ));
    }
    ev.push((Some("content_block_stop"), r#"{"type":"content_block_stop","index":0}"#.into()));
    ev.push((Some("message_delta"), r#"{"type":"message_delta","delta":{"stop_reason":"end_turn"}}"#.into()));
    ev.push((Some("message_stop"), r#"{"type":"message_stop"}"#.into()));
    ev
}

/// Gemini `:streamGenerateContent?alt=sse`: `candidates[0].content.parts[0].text`.
fn gemini(payload: &str) -> Events {
    let mut ev: Events = tokens(&format!("Run this: {payload} and enjoy"))
        .iter()
        .map(|t| {
            (None, format!(r#"{{"candidates":[{{"content":{{"parts":[{{"text":{}}}],"role":"model"}},"index":0}}],"modelVersion":"gemini-2.5-flash"}}"#, js(t)))
        })
        .collect();
    ev.push((None, r#"{"candidates":[{"content":{"parts":[{"text":""}],"role":"model"},"finishReason":"STOP","index":0}],"usageMetadata":{"totalTokenCount":9}}"#.into()));
    ev
}

/// OpenAI Responses API: `response.output_text.delta` or `response.function_call_arguments.delta`.
fn responses(payload: &str, tool: bool) -> Events {
    let mut ev: Events = vec![(
        Some("response.created"),
        r#"{"type":"response.created","sequence_number":0,"response":{"id":"r","status":"in_progress","output":[]}}"#
            .into(),
    )];
    if tool {
        let a = args(payload);
        for t in tokens(&a) {
            ev.push((
                Some("response.function_call_arguments.delta"),
                format!(
                    r#"{{"type":"response.function_call_arguments.delta","item_id":"fc","output_index":0,"delta":{}}}"#,
                    js(&t)
                ),
            ));
        }
        ev.push((
            Some("response.function_call_arguments.done"),
            format!(
                r#"{{"type":"response.function_call_arguments.done","item_id":"fc","output_index":0,"arguments":{}}}"#,
                js(&a)
            ),
        ));
    } else {
        for t in tokens(&format!("Run this: {payload} and enjoy")) {
            ev.push((
                Some("response.output_text.delta"),
                format!(r#"{{"type":"response.output_text.delta","item_id":"msg","output_index":0,"content_index":0,"delta":{}}}"#, js(&t)),
            ));
        }
    }
    ev.push((
        Some("response.completed"),
        r#"{"type":"response.completed","response":{"id":"r","status":"completed"}}"#.into(),
    ));
    ev
}

/// An SSE body of these events with `eol` line ends and a comment first.
fn sse(events: &Events, eol: &str) -> Vec<u8> {
    let mut b = format!(": ping{eol}{eol}");
    for (ty, data) in events {
        if let Some(ty) = ty {
            b.push_str(&format!("event: {ty}{eol}"));
        }
        b.push_str(&format!("data: {data}{eol}{eol}"));
    }
    b.into_bytes()
}

/// Ollama `/api/chat` NDJSON: `message.content`, then `done: true`.
fn ollama(payload: &str) -> Vec<u8> {
    let mut b = String::new();
    for t in tokens(&format!("Run this: {payload} and enjoy")) {
        let line = serde_json::json!({"model": "llama3", "created_at": "2025-01-01T00:00:00Z",
            "message": {"role": "assistant", "content": t}, "done": false});
        b.push_str(&format!("{line}\n"));
    }
    b.push_str(r#"{"model":"llama3","message":{"role":"assistant","content":""},"done_reason":"stop","done":true}"#);
    b.push('\n');
    b.into_bytes()
}

/// Every fixture: (name, content type, body).
fn fixtures(payload: &str) -> Vec<(String, &'static str, Vec<u8>)> {
    let mut out = Vec::new();
    for (eol_name, eol) in [("lf", "\n"), ("crlf", "\r\n")] {
        let shapes: [(&str, Events); 7] = [
            ("openai content", openai(payload, false)),
            ("openai tool_calls", openai(payload, true)),
            ("anthropic text", anthropic(payload, false)),
            ("anthropic partial_json", anthropic(payload, true)),
            ("gemini", gemini(payload)),
            ("responses text", responses(payload, false)),
            ("responses arguments", responses(payload, true)),
        ];
        for (name, ev) in shapes {
            out.push((format!("{name} ({eol_name})"), "text/event-stream", sse(&ev, eol)));
        }
    }
    out.push(("ollama".into(), "application/x-ndjson", ollama(payload)));
    out
}

/// GETs `addr`'s stream through the proxy and returns the status and the body.
async fn fetch(p: &TestProxy, addr: std::net::SocketAddr, path: &str) -> (StatusCode, Bytes) {
    let mut c = client(p.addr()).await;
    let (status, _, body) = send(&mut c, p.request("GET", &format!("http://{addr}{path}"), full(""))).await;
    (status, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_provider_shape_is_found_split_over_events_and_tcp_writes() {
    let (payload, pattern) = hostile();
    let p = TestProxy::start(|_| {}).await;
    for (name, ct, body) in fixtures(payload) {
        // The Responses API's done-event repeats the arguments whole; the inspector does not scan it again,
        // so there too the finding comes from the joined deltas.
        let whole = body.windows(payload.len()).any(|w| w == payload.as_bytes());
        assert!(!whole || name.starts_with("responses arguments"), "{name}: never whole on the wire");
        let reply = StreamReply::new(ct, cut(&body, 23));
        let addr = streaming_upstream(reply.clone()).await;
        let (status, got) = fetch(&p, addr, "/v1/stream").await;
        assert_eq!(status, StatusCode::OK, "{name}");
        assert_eq!(sha256(&got), sha256(&reply.body()), "{name}: byte-exact");
        let found: Vec<_> = p.findings_of(pattern).await.into_iter().filter(|f| f.dest == addr.to_string()).collect();
        assert!(!found.is_empty(), "{name}: not found");
        for f in &found {
            assert_eq!((f.direction, f.location.clone()), (Direction::Inbound, Some(Location::Body)), "{name}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gzip_compressed_sse_flushed_per_event_is_found_and_forwarded_untouched() {
    use std::io::Write;
    let (payload, pattern) = hostile();
    let p = TestProxy::start(|_| {}).await;
    for (name, events) in [("openai", openai(payload, false)), ("anthropic", anthropic(payload, true))] {
        // A server compresses the stream as it goes, with a sync flush after every event.
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        let mut pieces = Vec::new();
        for ev in &events {
            gz.write_all(&sse(&vec![ev.clone()], "\n")).unwrap();
            gz.flush().unwrap();
            pieces.push(std::mem::take(gz.get_mut()));
        }
        pieces.push(gz.finish().unwrap());
        let mut reply = StreamReply::new("text/event-stream", pieces.into_iter().filter(|p| !p.is_empty()).collect());
        reply.headers.push(("content-encoding", "gzip".into()));
        let addr = streaming_upstream(reply.clone()).await;
        let mut c = client(p.addr()).await;
        let (status, headers, got) = send(&mut c, p.request("GET", &format!("http://{addr}/sse"), full(""))).await;
        assert_eq!((status, &headers["content-encoding"]), (StatusCode::OK, &"gzip".parse().unwrap()), "{name}");
        assert_eq!(sha256(&got), sha256(&reply.body()), "{name}: the compressed bytes as sent");
        let found: Vec<_> = p.findings_of(pattern).await.into_iter().filter(|f| f.dest == addr.to_string()).collect();
        assert!(!found.is_empty(), "{name}: not found");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_finding_reaches_the_log_while_the_stream_is_still_open() {
    let (payload, pattern) = hostile();
    let p = TestProxy::start(|_| {}).await;
    let hold = Arc::new(tokio::sync::Notify::new());
    // The events that spell the payload, and no end: no finish_reason, no [DONE].
    let events: Events = openai(payload, false)
        .into_iter()
        .filter(|(_, d)| !d.contains("finish_reason\":\"") && d != "[DONE]")
        .collect();
    let mut reply = StreamReply::new("text/event-stream", cut(&sse(&events, "\n"), 17));
    reply.hold = Some(hold.clone());
    let addr = streaming_upstream(reply.clone()).await;
    let mut c = client(p.addr()).await;
    c.ready().await.unwrap();
    let resp = c.send_request(p.request("GET", &format!("http://{addr}/sse"), full(""))).await.unwrap();
    let mut body = resp.into_body();
    let mut got = Vec::new();
    // The client sees every byte sent so far while the stream stays open.
    while got.len() < reply.body().len() {
        let frame = tokio::time::timeout(Duration::from_secs(5), body.frame()).await.expect("bytes in time");
        got.extend_from_slice(frame.expect("open").expect("frame").data_ref().expect("data"));
    }
    let logged = async {
        loop {
            if log_lines(&p).iter().any(|f| f.pattern == pattern && f.dest == addr.to_string()) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(5), logged).await.expect("logged while the stream is open");
    assert!(!body.is_end_stream());
    hold.notify_one();
    let rest = body.collect().await.unwrap().to_bytes();
    got.extend_from_slice(&rest);
    assert_eq!(sha256(&got), sha256(&reply.body()));
    assert_eq!(p.findings_of(pattern).await.len(), 1, "reported once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clean_streams_give_no_finding() {
    let p = TestProxy::start(|_| {}).await;
    let clean = "To list files, run ls -la in the folder; curl the docs page if you need more.";
    for (name, ct, body) in fixtures(clean) {
        let reply = StreamReply::new(ct, cut(&body, 31));
        let addr = streaming_upstream(reply.clone()).await;
        let (status, got) = fetch(&p, addr, "/v1/stream").await;
        assert_eq!(status, StatusCode::OK, "{name}");
        assert_eq!(sha256(&got), sha256(&reply.body()), "{name}");
    }
    let found: Vec<_> = p.findings().await.into_iter().filter(|f| f.threat_type != ThreatType::Egress).collect();
    assert!(found.is_empty(), "{found:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_spelled_in_an_outbound_stream_is_exfil() {
    // Outbound event streams are rare, but a request body of that type is routed the same way.
    let up = upstream().await;
    let p = TestProxy::start(|_| {}).await;
    let wire = sse(&openai(SECRET, false), "\n");
    let parts = cut(&wire, 19);
    let parts: Vec<&[u8]> = parts.iter().map(Vec::as_slice).collect();
    let mut c = client(p.addr()).await;
    let mut req = p.request("POST", &format!("http://{}/echo", up.addr), chunked(&parts));
    req.headers_mut().insert("content-type", "text/event-stream".parse().unwrap());
    let (status, _, body) = send(&mut c, req).await;
    assert_eq!((status, sha256(&body)), (StatusCode::OK, sha256(&wire)));
    let found = p.findings_of("aws_access_key").await;
    assert!(
        found.iter().any(|f| f.direction == Direction::Outbound && f.threat_type == ThreatType::Exfil),
        "{found:?}"
    );
}
