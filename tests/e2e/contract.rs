//! The alternatives the contract grew (`../shared/digicert-api.md` 1.2): the source address as
//! `client_ip` or `ipAddress`, epoch-millisecond times, uppercase statuses of sibling services.

use std::collections::BTreeMap;

use crate::helpers::*;

/// Under `alt-fields` (about 30% of events with the sibling services' fields) every event is
/// stored, none quarantined beyond the truly malformed, each with its time and source address
/// read from whichever field carried them. Nothing is filtered on `status` server-side (the
/// filter is exact, and uppercase statuses would go missing).
#[test]
fn alternative_fields_of_sibling_services_are_understood() {
    let sim = Sim::start(&[
        "--events",
        "1500",
        "--days",
        "4",
        "--faults",
        "alt-fields,malformed",
    ]);
    let app = App::new(&sim, "");
    app.collect_ok();
    assert_matches_truth(&app, &sim, "one");

    let truth_ms: BTreeMap<String, i64> = sim.truth()["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| {
            let t = chrono::DateTime::parse_from_rfc3339(e["timestamp"].as_str().expect("ts"))
                .expect("rfc3339");
            (
                e["id"].as_str().expect("id").to_string(),
                t.timestamp_millis(),
            )
        })
        .collect();
    // What `export events` shows of each stored event: id, time, address, status, raw text.
    // (event_id, ts_ms, ip_address, status, raw)
    type Row = (String, i64, Option<String>, Option<String>, String);
    let text = |v: &serde_json::Value| v.as_str().map(str::to_string);
    let rows: Vec<Row> = app
        .exported_events()
        .iter()
        .filter(|e| e["account"] == "one")
        .map(|e| {
            let t = chrono::DateTime::parse_from_rfc3339(e["timestamp"].as_str().expect("ts"))
                .expect("rfc3339");
            (
                e["id"].as_str().expect("id").to_string(),
                t.timestamp_millis(),
                text(&e["ip_address"]),
                text(&e["status"]),
                e["raw"].to_string(),
            )
        })
        .collect();
    let (mut epoch, mut client_ip, mut camel, mut upper) = (0, 0, 0, 0);
    for (id, ts_ms, ip, status, raw) in &rows {
        let v: serde_json::Value = serde_json::from_str(raw).expect("raw json");
        assert_eq!(truth_ms.get(id), Some(ts_ms), "time of {raw}");
        if let Some(ms) = v["date"].as_i64() {
            epoch += 1;
            assert_eq!(ms, *ts_ms, "{raw}");
        }
        let served_ip = ["ip_address", "client_ip", "ipAddress"]
            .iter()
            .find_map(|k| v[*k].as_str());
        assert_eq!(ip.as_deref(), served_ip, "address of {raw}");
        client_ip += usize::from(v.get("client_ip").is_some());
        camel += usize::from(v.get("ipAddress").is_some());
        let served = v["status"].as_str().unwrap_or("");
        if served.chars().any(|c| c.is_ascii_uppercase()) {
            upper += 1;
        }
        assert_eq!(status.as_deref(), Some(served.to_lowercase().as_str()));
    }
    assert!(
        epoch > 50 && client_ip > 50 && camel > 50 && upper > 100,
        "the fault served too few alternatives: {epoch} epoch-ms, {client_ip} client_ip, {camel} ipAddress, {upper} uppercase"
    );
}
