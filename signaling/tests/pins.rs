//! Router tests of members, PINs, PIN join (with its limits) and invites,
//! over the in-memory fakes.

mod fakes;

use std::net::SocketAddr;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::connect_info::MockConnectInfo;
use axum::http::{HeaderMap, Method, Request, header};
use sabha_signaling::timestamp::unix_now;
use sabha_signaling::{Auth, OperatorKey, PinLimits, Role, Settings, router};
use serde_json::{Value, json};
use tower::ServiceExt;

const KEY: &str = "sk_test_operator";

struct Harness {
    app: Router,
    auth: Auth,
}

struct Reply {
    status: u16,
    headers: HeaderMap,
    body: Bytes,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!("{e}: {}", String::from_utf8_lossy(&self.body));
        })
    }
    fn text(&self) -> String {
        String::from_utf8(self.body.to_vec()).unwrap()
    }
}

fn harness(limits: PinLimits) -> Harness {
    let auth = Auth::new(b"test secret, 32 bytes long......", OperatorKey::new(KEY));
    let settings = Settings {
        pin_limits: limits,
        ..Settings::default()
    };
    let state = fakes::app_state(auth.clone(), settings);
    Harness {
        app: router(state),
        auth,
    }
}

fn generous() -> PinLimits {
    PinLimits {
        per_ip_per_minute: 1000,
        per_room_per_minute: 1000,
        failures_before_lockout: 1000,
        lockout_s: 60,
        room_failures_before_lockout: 1000,
    }
}

const ORG: &str = "id,kind,name,parent\nMH,state,Maharashtra,\nD1,district,Pune,MH\nB1,booth,Booth 1,D1\nD2,district,Nagpur,MH\nB2,booth,Booth 2,D2\n";
const MEMBERS: &str =
    "id,name,phone,unit\nm1,Asha Rao,+919800000001,B1\nm2,Ravi,,D1\nm3,Meena,+919800000003,B2\n";

impl Harness {
    async fn send_from(&self, ip: [u8; 4], request: Request<Body>) -> Reply {
        let addr = SocketAddr::from((ip, 40000));
        let response = self
            .app
            .clone()
            .layer(MockConnectInfo(addr))
            .oneshot(request)
            .await
            .unwrap();
        let (parts, body) = response.into_parts();
        Reply {
            status: parts.status.as_u16(),
            headers: parts.headers,
            body: axum::body::to_bytes(body, 1 << 24).await.unwrap(),
        }
    }

    async fn send(&self, request: Request<Body>) -> Reply {
        self.send_from([10, 0, 0, 1], request).await
    }

    async fn operator(&self, method: Method, uri: &str, ctype: &str, body: String) -> Reply {
        let mut b = Request::builder()
            .method(method)
            .uri(uri)
            .header(header::AUTHORIZATION, format!("Bearer {KEY}"));
        if !ctype.is_empty() {
            b = b.header(header::CONTENT_TYPE, ctype);
        }
        self.send(b.body(Body::from(body)).unwrap()).await
    }

    async fn get(&self, uri: &str, accept: &str) -> Reply {
        let request = Request::get(uri)
            .header(header::AUTHORIZATION, format!("Bearer {KEY}"))
            .header(header::ACCEPT, accept)
            .body(Body::empty())
            .unwrap();
        self.send(request).await
    }

    async fn with_org_and_members(&self) {
        let r = self
            .operator(Method::PUT, "/v1/org", "text/csv", ORG.into())
            .await;
        assert_eq!(r.status, 200, "{}", r.text());
        let r = self
            .operator(Method::PUT, "/v1/members", "text/csv", MEMBERS.into())
            .await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.json(), json!({"upserted": 3, "removed": 0, "members": 3}));
    }

    async fn room(&self, body: Value) -> Value {
        let r = self
            .operator(
                Method::POST,
                "/v1/rooms",
                "application/json",
                body.to_string(),
            )
            .await;
        assert_eq!(r.status, 201, "{}", r.text());
        r.json()
    }

    /// Issues PINs under `unit`; member/unit id → PIN.
    async fn pins(&self, unit: &str, members: bool, units: bool) -> Vec<(String, String)> {
        let body = json!({"unit": unit, "members": members, "units": units}).to_string();
        let r = self
            .operator(Method::POST, "/v1/pins", "application/json", body)
            .await;
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.headers[header::CACHE_CONTROL], "no-store");
        r.json()["pins"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| {
                (
                    p["id"].as_str().unwrap().to_owned(),
                    p["pin"].as_str().unwrap().to_owned(),
                )
            })
            .collect()
    }

    async fn pin_join(&self, ip: [u8; 4], code: &str, pin: &str) -> Reply {
        let request = Request::post("/v1/pin-join")
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(
                json!({"room_code": code, "pin": pin}).to_string(),
            ))
            .unwrap();
        self.send_from(ip, request).await
    }
}

fn pin_of<'a>(pins: &'a [(String, String)], id: &str) -> &'a str {
    &pins.iter().find(|(i, _)| i == id).unwrap().1
}

/// A PIN that is none of `pins`.
fn wrong_pin(pins: &[(String, String)]) -> String {
    (0..1_000_000)
        .map(|n| format!("{n:06}"))
        .find(|p| !pins.iter().any(|(_, q)| q == p))
        .unwrap()
}

#[tokio::test]
async fn members_import_list_and_get() {
    let h = harness(generous());
    h.with_org_and_members().await;
    let d1 = h
        .get("/v1/members?unit=D1", "application/json")
        .await
        .json();
    let ids: Vec<&str> = d1["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["m1", "m2"]);
    let all = h.get("/v1/members", "application/json").await.json();
    assert_eq!(all["members"].as_array().unwrap().len(), 3);
    let m1 = h.get("/v1/members/m1", "application/json").await;
    assert_eq!(
        m1.json(),
        json!({"id": "m1", "name": "Asha Rao", "phone": "+919800000001", "unit": "B1"})
    );
    assert_eq!(h.get("/v1/members/nope", "").await.status, 404);
    assert_eq!(h.get("/v1/members?unit=NOPE", "").await.status, 404);
    // JSON: move one, remove one; a bad one changes nothing.
    let bad = json!({"members": [{"id": "m9", "name": "X", "unit": "NOPE"}]}).to_string();
    let r = h
        .operator(Method::PUT, "/v1/members", "application/json", bad)
        .await;
    assert_eq!(r.status, 422);
    assert!(r.text().contains("NOPE"), "{}", r.text());
    let body = json!({"members": [{"id": "m2", "name": "Ravi", "unit": "B2"}], "remove": ["m3"]});
    let r = h
        .operator(
            Method::PUT,
            "/v1/members",
            "application/json",
            body.to_string(),
        )
        .await;
    assert_eq!(r.json(), json!({"upserted": 1, "removed": 1, "members": 2}));
    assert_eq!(h.get("/v1/members/m2", "").await.json()["unit"], "B2");
    assert_eq!(h.get("/v1/members/m3", "").await.status, 404);
    // Operator only; wrong media type is 415.
    let anonymous = Request::get("/v1/members").body(Body::empty()).unwrap();
    assert_eq!(h.send(anonymous).await.status, 401);
    let r = h
        .operator(Method::PUT, "/v1/members", "text/plain", MEMBERS.into())
        .await;
    assert_eq!(r.status, 415);
}

#[tokio::test]
async fn thirty_thousand_members_import_quickly() {
    let h = harness(generous());
    h.with_org_and_members().await;
    let mut csv = String::from("id,name,phone,unit\n");
    for i in 0..30_000 {
        csv.push_str(&format!("w{i},Worker {i},+91980{i:07},B1\n"));
    }
    let started = std::time::Instant::now();
    let r = h
        .operator(Method::PUT, "/v1/members", "text/csv", csv)
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["members"], 30_003);
    assert!(started.elapsed().as_secs() < 10, "{:?}", started.elapsed());
}

#[tokio::test]
async fn a_member_pin_joins_with_the_right_claims_and_role() {
    let h = harness(generous());
    h.with_org_and_members().await;
    let ends = jiff::Timestamp::from_second(unix_now() as i64 + 7200).unwrap();
    let starts = jiff::Timestamp::from_second(unix_now() as i64 - 60).unwrap();
    let rally = h
        .room(json!({"name": "Pune rally", "kind": "rally", "unit": "D1",
                     "starts_at": starts, "ends_at": ends, "hosts": ["m2"]}))
        .await;
    let pins = h.pins("D1", true, true).await;
    let ids: Vec<&str> = pins.iter().map(|(i, _)| i.as_str()).collect();
    assert_eq!(ids.len(), 4, "{ids:?}"); // units D1, B1; members m1, m2
    let code = rally["code"].as_str().unwrap();
    let r = h.pin_join([10, 0, 0, 1], code, pin_of(&pins, "m1")).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let joined = r.json();
    assert_eq!(joined["role"], "listener");
    assert_eq!(joined["name"], "Asha Rao");
    assert_eq!(
        joined["whep_url"],
        format!("/v1/rooms/{}/whep", rally["id"].as_str().unwrap())
    );
    assert_eq!(
        joined["page"],
        format!("/l/{}", rally["id"].as_str().unwrap())
    );
    let claims = h
        .auth
        .tokens()
        .verify(joined["token"].as_str().unwrap(), unix_now())
        .unwrap();
    assert_eq!(claims.room, rally["id"].as_str().unwrap());
    assert_eq!(claims.member.as_deref(), Some("m1"));
    assert_eq!(claims.unit.as_deref(), Some("B1"));
    assert_eq!(claims.name.as_deref(), Some("Asha Rao"));
    assert_eq!(claims.role, Role::Listener);
    // Valid until an hour after the scheduled end.
    assert_eq!(claims.exp, ends.as_second() as u64 + 3600);
    // A host member hosts; a unit PIN carries the unit only.
    let host = h
        .pin_join([10, 0, 0, 1], code, pin_of(&pins, "m2"))
        .await
        .json();
    assert_eq!(host["role"], "host");
    assert!(host["whip_url"].is_string());
    let booth = h
        .pin_join([10, 0, 0, 1], code, pin_of(&pins, "B1"))
        .await
        .json();
    let claims = h
        .auth
        .tokens()
        .verify(booth["token"].as_str().unwrap(), unix_now())
        .unwrap();
    assert_eq!((claims.member, claims.unit.as_deref()), (None, Some("B1")));
    assert_eq!(claims.name.as_deref(), Some("Booth 1"));
    // A bridge gives participants; rotating a PIN retires the old one.
    let bridge = h.room(json!({"name": "Call", "kind": "bridge"})).await;
    let bcode = bridge["code"].as_str().unwrap();
    let r = h
        .pin_join([10, 0, 0, 1], bcode, pin_of(&pins, "m1"))
        .await
        .json();
    assert_eq!(r["role"], "participant");
    assert!(r["join_url"].is_string());
    let rotated = h.pins("B1", true, false).await;
    assert_eq!(rotated.len(), 1);
    if pin_of(&rotated, "m1") != pin_of(&pins, "m1") {
        let old = h.pin_join([10, 0, 0, 1], bcode, pin_of(&pins, "m1")).await;
        assert_eq!(old.status, 401);
    }
    let new = h
        .pin_join([10, 0, 0, 1], bcode, pin_of(&rotated, "m1"))
        .await;
    assert_eq!(new.status, 200);
}

#[tokio::test]
async fn unknown_code_and_wrong_pin_are_the_same_401_and_other_districts_are_refused() {
    let h = harness(generous());
    h.with_org_and_members().await;
    let rally = h
        .room(json!({"name": "Pune rally", "kind": "rally", "unit": "D1"}))
        .await;
    let pins = h.pins("MH", true, true).await;
    let code = rally["code"].as_str().unwrap();
    let unknown_code = if code == "00000000" {
        "11111111"
    } else {
        "00000000"
    };
    let a = h
        .pin_join([10, 0, 0, 1], unknown_code, pin_of(&pins, "m1"))
        .await;
    let b = h.pin_join([10, 0, 0, 1], code, &wrong_pin(&pins)).await;
    // m3 is in Nagpur (D2), outside the Pune audience; so is unit B2 and
    // the state unit MH above it.
    let c = h.pin_join([10, 0, 0, 1], code, pin_of(&pins, "m3")).await;
    let d = h.pin_join([10, 0, 0, 1], code, pin_of(&pins, "MH")).await;
    let e = h.pin_join([10, 0, 0, 1], "not a code", "12").await;
    for r in [&a, &b, &c, &d, &e] {
        assert_eq!(r.status, 401);
        assert_eq!(r.body, a.body);
        assert_eq!(r.headers[header::CONTENT_TYPE], "application/problem+json");
    }
    assert!(a.text().contains("room code or PIN is wrong"));
    // PINs are unique across members and units.
    let mut all: Vec<&str> = pins.iter().map(|(_, p)| p.as_str()).collect();
    all.sort_unstable();
    all.dedup();
    assert_eq!(all.len(), pins.len());
}

#[tokio::test]
async fn failures_lock_an_ip_out_even_with_the_right_pin_until_the_lockout_ends() {
    let h = harness(PinLimits {
        failures_before_lockout: 3,
        lockout_s: 1,
        ..generous()
    });
    h.with_org_and_members().await;
    let room = h.room(json!({"name": "Rally", "kind": "rally"})).await;
    let code = room["code"].as_str().unwrap();
    let pins = h.pins("MH", true, false).await;
    let wrong = wrong_pin(&pins);
    for _ in 0..3 {
        assert_eq!(h.pin_join([10, 0, 0, 7], code, &wrong).await.status, 401);
    }
    let locked = h.pin_join([10, 0, 0, 7], code, pin_of(&pins, "m1")).await;
    assert_eq!(locked.status, 429, "{}", locked.text());
    assert_eq!(locked.headers[header::RETRY_AFTER], "1");
    // Another address is not locked.
    assert_eq!(
        h.pin_join([10, 0, 0, 8], code, pin_of(&pins, "m1"))
            .await
            .status,
        200
    );
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    assert_eq!(
        h.pin_join([10, 0, 0, 7], code, pin_of(&pins, "m1"))
            .await
            .status,
        200
    );
}

#[tokio::test]
async fn a_room_code_locks_after_its_failure_ceiling_and_rates_are_limited() {
    let h = harness(PinLimits {
        room_failures_before_lockout: 4,
        ..generous()
    });
    h.with_org_and_members().await;
    let room = h.room(json!({"name": "Rally", "kind": "rally"})).await;
    let code = room["code"].as_str().unwrap();
    let pins = h.pins("MH", true, false).await;
    let wrong = wrong_pin(&pins);
    for i in 0..4 {
        assert_eq!(h.pin_join([10, 0, 1, i], code, &wrong).await.status, 401);
    }
    let r = h.pin_join([10, 0, 2, 1], code, pin_of(&pins, "m1")).await;
    assert_eq!(r.status, 429);
    assert_eq!(r.headers[header::RETRY_AFTER], "60");

    let h = harness(PinLimits {
        per_ip_per_minute: 2,
        ..generous()
    });
    h.with_org_and_members().await;
    let room = h.room(json!({"name": "Rally", "kind": "rally"})).await;
    let code = room["code"].as_str().unwrap();
    let pins = h.pins("MH", true, false).await;
    for _ in 0..2 {
        assert_eq!(
            h.pin_join([10, 0, 0, 9], code, pin_of(&pins, "m1"))
                .await
                .status,
            200
        );
    }
    let r = h.pin_join([10, 0, 0, 9], code, pin_of(&pins, "m1")).await;
    assert_eq!(r.status, 429);
    assert_eq!(r.headers[header::RETRY_AFTER], "30");
}

#[tokio::test]
async fn invites_per_member_and_per_unit_as_json_and_csv() {
    let h = harness(generous());
    h.with_org_and_members().await;
    let room = h
        .room(json!({"name": "Pune rally", "kind": "rally", "unit": "D1"}))
        .await;
    let id = room["id"].as_str().unwrap();
    let r = h.get(&format!("/v1/rooms/{id}/invite?unit=D1"), "").await;
    assert_eq!(r.status, 200, "{}", r.text());
    let invites = r.json()["invites"].as_array().unwrap().clone();
    assert_eq!(invites.len(), 2);
    let asha = invites.iter().find(|i| i["member"] == "m1").unwrap();
    assert_eq!(asha["phone"], "+919800000001");
    let token = asha["token"].as_str().unwrap();
    assert_eq!(asha["url"], format!("/v1/rooms/{id}/whep?token={token}"));
    assert_eq!(asha["link"], format!("/l/{id}#token={token}"));
    let claims = h.auth.tokens().verify(token, unix_now()).unwrap();
    assert_eq!(
        (
            claims.member.as_deref(),
            claims.unit.as_deref(),
            claims.role
        ),
        (Some("m1"), Some("B1"), Role::Listener)
    );
    let csv = h
        .get(
            &format!("/v1/rooms/{id}/invite?unit=B1&per=unit"),
            "text/csv",
        )
        .await;
    assert_eq!(csv.headers[header::CONTENT_TYPE], "text/csv; charset=utf-8");
    let text = csv.text();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines[0],
        "member,unit,name,phone,role,token,expires_at,url,link"
    );
    assert!(
        lines[1].contains(&format!(",/l/{id}#token=")),
        "{}",
        lines[1]
    );
    assert_eq!(lines.len(), 2);
    assert!(
        lines[1].starts_with(",B1,Booth 1,,listener,"),
        "{}",
        lines[1]
    );
    // Nagpur is outside the Pune audience; unknown units too.
    for unit in ["D2", "MH", "NOPE"] {
        let r = h
            .get(&format!("/v1/rooms/{id}/invite?unit={unit}"), "")
            .await;
        assert_eq!(r.status, 422, "{unit}");
    }
}

#[tokio::test]
async fn pins_as_csv_and_bad_pin_requests() {
    let h = harness(generous());
    h.with_org_and_members().await;
    let request = Request::post("/v1/pins")
        .header(header::AUTHORIZATION, format!("Bearer {KEY}"))
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::ACCEPT, "text/csv")
        .body(Body::from(r#"{"unit":"D2","units":true}"#))
        .unwrap();
    let r = h.send(request).await;
    let text = r.text();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "kind,id,name,unit,phone,pin");
    assert_eq!(lines.len(), 4, "{text}"); // units D2, B2; member m3
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("member,m3,Meena,B2,+919800000003,"))
    );
    let none = json!({"unit": "D2", "members": false, "units": false}).to_string();
    let r = h
        .operator(Method::POST, "/v1/pins", "application/json", none)
        .await;
    assert_eq!(r.status, 422);
    let unknown = json!({"unit": "NOPE"}).to_string();
    let r = h
        .operator(Method::POST, "/v1/pins", "application/json", unknown)
        .await;
    assert_eq!(r.status, 422);
    let anonymous = Request::post("/v1/pins")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(r#"{"unit":"D2"}"#))
        .unwrap();
    assert_eq!(h.send(anonymous).await.status, 401);
}
