use super::*;

fn id() -> Identity {
    Identity { hardware_id: "billtest000000004".into(), name: "rig four".into() }
}

fn parse(s: &str) -> Value {
    serde_json::from_str(s).unwrap()
}

#[test]
fn login_has_the_fields_of_the_protocol() {
    let v = parse(&encode_login(&id(), "9f3a61c2-1", "tok"));
    assert_eq!(v["from"], "device");
    assert_eq!(v["act"], "start");
    assert_eq!(v["reqtype"], "post");
    assert_eq!(v["act_id"], "9f3a61c2-1");
    assert_eq!(v["hardware_id"], "billtest000000004");
    assert_eq!(v["name"], "rig four");
    assert_eq!(v["token"], "tok");
    assert_eq!(v["version"], format!("rig-agent {}", crate::version()));
}

#[test]
fn a_warning_has_every_field_of_the_protocol_and_the_seeds_message() {
    let disk = Named::Disk { device: "/dev/sdl", serial: Some("ZA1B2C3D") };
    let stamp = Stamp { time: Timestamp::exact(1_764_000_000), maintenance: false };
    let v = encode_warning(&id(), "9f3a61c2-12", &disk, "missing", "block device sdl disappeared", &stamp);
    let want = json!({"from":"device","act":"warning","reqtype":"post","act_id":"9f3a61c2-12","act_code":"",
            "client_id":"","hardware_id":"billtest000000004","name":"rig four","type":2,
            "message":"Disk[/dev/sdl]硬盘损坏","disk":"/dev/sdl","serial":"ZA1B2C3D",
            "reason":"missing","detail":"block device sdl disappeared","time":1_764_000_000u64});
    assert_eq!(v, want);
    assert_eq!(decode_warning(&v.to_string()).unwrap().subject, "sdl");
}

#[test]
fn a_gpu_warning_has_every_field_of_the_protocol_and_its_message() {
    let gpu = Named::Gpu {
        bus: "0000:01:00.0",
        index: Some(0),
        model: Some("NVIDIA GeForce RTX 3090"),
        uuid: Some("GPU-5e1f0c2a-8b3d-4e7f-9a1b-2c3d4e5f6a7b"),
    };
    let detail = "kernel: NVRM: Xid (PCI:0000:01:00): 79, GPU has fallen off the bus.";
    let v = encode_warning(
        &id(),
        "9f3a61c2-31",
        &gpu,
        "gpu_lost",
        detail,
        &Stamp { time: Timestamp::exact(1_764_000_000), maintenance: false },
    );
    let want = json!({"from":"device","act":"warning","reqtype":"post","act_id":"9f3a61c2-31","act_code":"",
            "client_id":"","hardware_id":"billtest000000004","name":"rig four","type":3,
            "message":"GPU[0000:01:00.0]显卡故障","gpu":"0000:01:00.0","index":0,
            "model":"NVIDIA GeForce RTX 3090","uuid":"GPU-5e1f0c2a-8b3d-4e7f-9a1b-2c3d4e5f6a7b",
            "reason":"gpu_lost","detail":detail,"time":1_764_000_000u64});
    assert_eq!(v, want);
    assert_eq!(decode_warning(&v.to_string()).unwrap().subject, "0000:01:00.0");
    let unknown = Named::Gpu { bus: "0000:03:00.0", index: None, model: None, uuid: None };
    let v = encode_warning(
        &id(),
        "a-1",
        &unknown,
        "gpu_missing",
        "",
        &Stamp { time: Timestamp::exact(1), maintenance: false },
    );
    assert_eq!((&v["index"], &v["model"], &v["uuid"]), (&Value::Null, &Value::Null, &Value::Null));
}

#[test]
fn a_warning_cleared_refers_to_its_warning_and_names_the_subject_as_it_did() {
    let disk = Named::Disk { device: "/dev/sdl", serial: Some("ZA1B2C3D") };
    let stamp = Stamp { time: Timestamp::exact(1_764_000_100), maintenance: false };
    let v = encode_cleared(&id(), "9f3a61c2-13", "9f3a61c2-12", &disk, "missing", "sdl is back", &stamp);
    let want = json!({"from":"device","act":"warning_cleared","reqtype":"post","act_id":"9f3a61c2-13",
            "ref_act_id":"9f3a61c2-12","act_code":"","client_id":"","hardware_id":"billtest000000004","type":2,
            "disk":"/dev/sdl","reason":"missing","detail":"sdl is back","time":1_764_000_100u64});
    assert_eq!(v, want);
    let back = decode_cleared(&v.to_string()).unwrap();
    assert_eq!((back.ref_act_id.as_str(), back.parts.subject.as_str()), ("9f3a61c2-12", "sdl"));
    let gpu = Named::Gpu { bus: "0000:01:00.0", index: Some(0), model: None, uuid: None };
    let v = encode_cleared(&id(), "a-2", "a-1", &gpu, "gpu_lost", "back", &stamp);
    assert_eq!((v["type"].as_u64(), v["gpu"].as_str(), v.get("disk")), (Some(3), Some("0000:01:00.0"), None));
    assert_eq!(decode_cleared(&encode_warning(&id(), "a-1", &gpu, "gpu_lost", "", &stamp).to_string()), None);
}

#[test]
fn a_warning_made_in_maintenance_says_so_and_one_made_outside_it_has_no_such_key() {
    let disk = Named::Disk { device: "/dev/sdl", serial: None };
    let on =
        encode_warning(&id(), "a-1", &disk, "missing", "", &Stamp { time: Timestamp::exact(1), maintenance: true });
    assert_eq!(on["maintenance"], true);
    let off =
        encode_warning(&id(), "a-2", &disk, "missing", "", &Stamp { time: Timestamp::exact(1), maintenance: false });
    assert_eq!(off.get("maintenance"), None);
}

#[test]
fn a_warning_raised_with_a_wrong_clock_carries_time_suspect_and_reads_back_so() {
    let t = Timestamp { secs: 1_764_000_000, suspect: true };
    let disk = Named::Disk { device: "/dev/sdl", serial: None };
    let v = encode_warning(&id(), "a-1", &disk, "missing", "gone", &Stamp { time: t, maintenance: false });
    assert_eq!((v["time"].clone(), v["time_suspect"].clone()), (json!(1_764_000_000u64), json!(true)));
    assert_eq!(decode_warning(&v.to_string()).unwrap().time, Some(t));
    let right = encode_warning(
        &id(),
        "a-2",
        &disk,
        "missing",
        "gone",
        &Stamp { time: Timestamp::exact(5), maintenance: false },
    );
    assert!(right.get("time_suspect").is_none(), "a v1 warning keeps its shape: {right}");
}

#[test]
fn act_ids_share_a_prefix_and_count_up() {
    let ids = ActIds::new();
    let (a, b) = (ids.next(), ids.next());
    let (pa, na) = a.split_once('-').unwrap();
    let (pb, nb) = b.split_once('-').unwrap();
    assert_eq!(pa, pb);
    assert_eq!(pa.len(), 8);
    assert!(pa.chars().all(|c| c.is_ascii_hexdigit()));
    assert_eq!(na.parse::<u64>().unwrap() + 1, nb.parse::<u64>().unwrap());
    assert_ne!(ActIds::new().prefix, ids.prefix, "two runs should not share a prefix");
}

#[test]
fn a_return_is_decoded_with_numeric_or_string_code() {
    let r = decode(r#"{"act":"return","action":"start","act_id":"x-1","code":0,"description":"操作成功"}"#).unwrap();
    let Inbound::Return(r) = r else { panic!() };
    assert!(r.is_ok());
    assert_eq!(r.description, "操作成功");
    let Inbound::Return(r) = decode(r#"{"act":"return","action":"start","code":"7"}"#).unwrap() else { panic!() };
    assert_eq!(r.code, Some(7));
    let Inbound::Return(r) = decode(r#"{"act":"return","action":"start"}"#).unwrap() else { panic!() };
    assert!(!r.is_ok(), "a return without a code is not a success");
}

#[test]
fn a_query_answer_echoes_act_code_client_id_and_reqtype() {
    let Inbound::Query(q) = decode(
        r#"{"from":"html","act":"get_agent_info","reqtype":"write","act_code":"codeNew","client_id":"c-42","extra":1}"#,
    )
    .unwrap() else {
        panic!()
    };
    assert_eq!(q.bad_request, None);
    let v = parse(&encode_answer(&id(), &q.echo, Ok(json!({"k": 1}))));
    assert_eq!(v["from"], "device");
    assert_eq!(v["act"], "get_agent_info");
    assert_eq!(v["reqtype"], "write");
    assert_eq!(v["act_code"], "codeNew");
    assert_eq!(v["client_id"], "c-42");
    assert_eq!(v["hardware_id"], "billtest000000004");
    assert_eq!(v["code"], 0);
    assert_eq!(v["data"]["k"], 1);
}

#[test]
fn an_error_answer_has_a_code_and_no_data() {
    let Inbound::Query(q) = decode(r#"{"act":"nope","act_code":"a"}"#).unwrap() else { panic!() };
    let v = parse(&encode_answer(&id(), &q.echo, Err(Refusal::unknown_act("nope"))));
    assert_eq!(v["code"], 1);
    assert!(v.get("data").is_none());
    assert_eq!(v["client_id"], "", "missing client_id is echoed as empty");
}

#[test]
fn an_envelope_field_of_the_wrong_type_is_a_bad_request() {
    let Inbound::Query(q) = decode(r#"{"act":"get_agent_info","act_code":17}"#).unwrap() else { panic!() };
    assert_eq!(q.bad_request.as_deref(), Some("`act_code` must be a string"));
}

#[test]
fn an_answer_echoes_act_code_client_id_and_reqtype_as_strings_whatever_the_query_carried() {
    let Inbound::Query(q) =
        decode(r#"{"act":"get_agent_info","act_code":42,"client_id":null,"reqtype":{"a":[1]}}"#).unwrap()
    else {
        panic!()
    };
    let v = parse(&encode_answer(&id(), &q.echo, Err(Refusal::bad_request(q.bad_request.clone().unwrap()))));
    assert_eq!(v["code"], 2);
    assert_eq!(v["act_code"], json!("42"), "a number is echoed as its text, so the gateway can still match it");
    assert_eq!(v["client_id"], json!(""), "null is echoed as empty");
    assert_eq!(v["reqtype"], json!(r#"{"a":[1]}"#));
}

#[test]
fn login_and_heartbeat_carry_empty_act_code_and_client_id_as_every_agent_message() {
    for v in [parse(&encode_login(&id(), "9f3a61c2-1", "tok")), parse(&encode_heartbeat(&id(), "9f3a61c2-2"))] {
        assert_eq!(v["act_code"], json!(""), "{v}");
        assert_eq!(v["client_id"], json!(""), "{v}");
    }
}

#[test]
fn an_oversized_echoed_field_is_a_bad_request_echoed_cut() {
    let big = "é".repeat(1000);
    let Inbound::Query(q) = decode(&json!({"act": big, "act_code": "a"}).to_string()).unwrap() else { panic!() };
    assert_eq!(q.bad_request.as_deref(), Some("`act` is longer than 256 bytes"));
    assert_eq!(q.echo.act, "é".repeat(128));
    let Inbound::Query(q) =
        decode(&json!({"act": "get_agent_info", "client_id": "c".repeat(300)}).to_string()).unwrap()
    else {
        panic!()
    };
    assert_eq!(q.bad_request.as_deref(), Some("`client_id` is longer than 256 bytes"));
    assert_eq!(q.echo.client_id.len(), MAX_ECHO_BYTES);
    let Inbound::Query(q) = decode(&json!({"act": "get_agent_info", "act_code": vec![1; 1000]}).to_string()).unwrap()
    else {
        panic!()
    };
    assert_eq!(q.bad_request.as_deref(), Some("`act_code` must be a string"));
    assert_eq!(q.echo.act_code.len(), MAX_ECHO_BYTES, "a large value of the wrong type is echoed cut");
    let v = parse(&encode_answer(&id(), &q.echo, Err(Refusal::bad_request(q.bad_request.clone().unwrap()))));
    assert_eq!(v["code"], 2);
}

#[test]
fn junk_is_classified() {
    assert!(matches!(decode("hello"), Err(Junk::NotJson(_))));
    assert_eq!(decode("[1,2]"), Err(Junk::NotObject));
    assert_eq!(decode("{}"), Err(Junk::NoAct));
    assert_eq!(decode(r#"{"act":5}"#), Err(Junk::ActNotString));
}
