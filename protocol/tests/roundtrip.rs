//! The protocol documents against real-world shapes: what the Perl library and the C++
//! scheduler wrote, hostile documents, and property tests of the writer and reader.

use std::time::{Duration, Instant};

use proptest::prelude::*;
use protocol::{
    CheckData, CheckResult, CheckResultVersion, DeviationKind, Document, ErrorKind, FixData,
    FixResult, Limits, Options, ReturnCode,
};

fn fixture(name: &str) -> Vec<u8> {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn result_doc(body: &str) -> Vec<u8> {
    format!("<?xml version=\"1.0\" encoding=\"iso-8859-1\"?>\n<SurvivorFixResult Version=\"1.0\">\n{body}</SurvivorFixResult>\n").into_bytes()
}

#[test]
fn reads_what_the_perl_library_writes() {
    let doc = FixResult::validate(&fixture("perl_library_result.xml")).unwrap();
    assert_eq!(doc.return_code, ReturnCode::OK);
    assert_eq!(doc.comment, "Fix for sshd successfully executed");
}

#[test]
fn iso_8859_1_bytes_decode_to_the_same_code_points() {
    let doc = FixResult::validate(&fixture("latin1_result.xml")).unwrap();
    assert_eq!(doc.comment, "redémarré <ok>");
}

#[test]
fn utf8_bytes_under_a_latin1_declaration_are_read_as_utf8_with_a_deviation() {
    // What a module does when it echoes UTF-8 input into a result that declares iso-8859-1.
    let bytes = result_doc(" <ReturnCode>0</ReturnCode>\n <Comment>redémarré</Comment>\n");
    let parsed = FixResult::parse(&bytes).unwrap();
    assert_eq!(parsed.doc.comment, "redémarré");
    assert!(matches!(
        parsed.deviations[..],
        [protocol::Deviation {
            kind: DeviationKind::EncodingMismatch { .. },
            ..
        }]
    ));
    assert!(FixResult::validate(&bytes).is_err());
}

#[test]
fn cpp_scheduler_timeout_spelling_is_read_and_reported() {
    let parsed = FixData::parse(&fixture("cpp_scheduler_request.xml")).unwrap();
    assert_eq!(parsed.doc.timeout, Some(45));
    assert_eq!(parsed.doc.options.first("service"), Some("sshd"));
    assert_eq!(parsed.deviations.len(), 1);
    assert_eq!(parsed.deviations[0].kind, DeviationKind::TimeOutSpelling);
    assert_eq!(
        parsed.deviations[0].to_string(),
        "2:32: <TimeOut> should be spelled <Timeout>"
    );
}

#[test]
fn missing_comment_is_forgiven_leniently_and_refused_strictly() {
    let bytes = fixture("cpp_no_comment.xml");
    let parsed = FixResult::parse(&bytes).unwrap();
    assert_eq!(parsed.doc, FixResult::new(ReturnCode::PROBLEM, ""));
    let invalid = FixResult::validate(&bytes).unwrap_err();
    assert_eq!(
        invalid.lines(),
        ["2:1: <SurvivorFixResult> has no <Comment> (taken as empty)"]
    );
}

#[test]
fn entity_bomb_is_refused_fast() {
    let start = Instant::now();
    let err = FixResult::parse(&fixture("billion_laughs.xml")).unwrap_err();
    assert_eq!(err.kind, ErrorKind::EntityDeclaration);
    assert_eq!(err.pos.line, 2);
    assert!(start.elapsed() < Duration::from_secs(1));
    // Without the DTD, the references themselves are unknown entities.
    let err = FixResult::parse(&result_doc(
        " <ReturnCode>0</ReturnCode>\n <Comment>&lol9;</Comment>\n",
    ))
    .unwrap_err();
    assert_eq!(err.kind, ErrorKind::UnknownEntity("lol9".into()));
    assert_eq!(err.to_string(), "4:11: unknown entity '&lol9;'");
}

#[test]
fn ten_mib_document_is_refused_by_the_default_limit_and_read_under_a_larger_one() {
    let comment = "x".repeat(10 << 20);
    let bytes = result_doc(&format!(
        " <ReturnCode>0</ReturnCode>\n <Comment>{comment}</Comment>\n"
    ));
    let err = FixResult::parse(&bytes).unwrap_err();
    assert!(
        matches!(err.kind, ErrorKind::TooLarge { limit, .. } if limit == 4 << 20),
        "{err}"
    );
    let limits = Limits {
        max_bytes: 16 << 20,
        ..Limits::default()
    };
    let start = Instant::now();
    let parsed = FixResult::parse_with(&bytes, &limits).unwrap();
    assert_eq!(parsed.doc.comment.len(), 10 << 20);
    assert!(start.elapsed() < Duration::from_secs(10));
}

#[test]
fn wrong_order_is_forgiven_leniently_and_refused_strictly() {
    let bytes = result_doc(" <Comment>done</Comment>\n <ReturnCode>0</ReturnCode>\n");
    let parsed = FixResult::parse(&bytes).unwrap();
    assert_eq!(parsed.doc, FixResult::new(ReturnCode::OK, "done"));
    let invalid = FixResult::validate(&bytes).unwrap_err();
    assert_eq!(
        invalid.lines(),
        ["4:2: <ReturnCode> is out of order in <SurvivorFixResult> (expected ReturnCode, Comment)"]
    );
}

#[test]
fn missing_return_code_is_an_error() {
    let err = FixResult::parse(&result_doc(" <Comment>x</Comment>\n")).unwrap_err();
    assert_eq!(
        err.to_string(),
        "2:1: <SurvivorFixResult> has no <ReturnCode>"
    );
}

#[test]
fn return_code_range_is_enforced() {
    let err = FixResult::parse(&result_doc(
        " <ReturnCode>1001</ReturnCode>\n <Comment></Comment>\n",
    ))
    .unwrap_err();
    assert_eq!(err.kind, ErrorKind::ReturnCodeOutOfRange(1001));
    for bad in ["12", "-1"] {
        let doc = result_doc(&format!(
            " <ReturnCode>{bad}</ReturnCode>\n <Comment></Comment>\n"
        ));
        assert!(FixResult::parse(&doc).is_err(), "{bad}");
    }
    let err = FixResult::parse(&result_doc(
        " <ReturnCode>ok</ReturnCode>\n <Comment></Comment>\n",
    ))
    .unwrap_err();
    assert_eq!(err.kind, ErrorKind::ReturnCodeNotInteger("ok".into()));
    // 1000 is the largest custom code and fine.
    let ok = result_doc(" <ReturnCode>1000</ReturnCode>\n <Comment></Comment>\n");
    assert_eq!(
        FixResult::validate(&ok).unwrap().return_code,
        ReturnCode::MAXRETURN
    );
    // The runner's codes are readable, but a module may not claim them.
    let runner = result_doc(" <ReturnCode>5</ReturnCode>\n <Comment></Comment>\n");
    assert_eq!(
        FixResult::parse(&runner).unwrap().doc.return_code,
        ReturnCode::TIMEDOUT
    );
    assert!(FixResult::validate(&runner).is_err());
}

#[test]
fn strict_validation_checks_root_version_and_cardinality() {
    let wrong_root = b"<SurvivorFixData Version=\"1.0\"/>";
    assert!(matches!(
        FixResult::parse(wrong_root).unwrap_err().kind,
        ErrorKind::WrongRoot { .. }
    ));
    let no_version = b"<SurvivorFixResult><ReturnCode>0</ReturnCode><Comment/></SurvivorFixResult>";
    let parsed = FixResult::parse(no_version).unwrap();
    assert_eq!(
        parsed.deviations[0].kind,
        DeviationKind::MissingVersion("SurvivorFixResult".into())
    );
    let twice = result_doc(
        " <ReturnCode>0</ReturnCode>\n <ReturnCode>1</ReturnCode>\n <Comment></Comment>\n",
    );
    assert!(matches!(
        FixResult::parse(&twice).unwrap_err().kind,
        ErrorKind::Duplicate { .. }
    ));
    let extra =
        result_doc(" <ReturnCode>0</ReturnCode>\n <Comment></Comment>\n <Scalar>1</Scalar>\n");
    assert!(FixResult::parse(&extra).is_ok());
    assert!(FixResult::validate(&extra).is_err());
}

#[test]
fn option_names_are_checked_strictly() {
    let doc = b"<?xml version=\"1.0\"?>\n<SurvivorFixData Version=\"1.0\">\n<ModuleOption OptionName=\"module\"><OptionValue>x</OptionValue></ModuleOption>\n<ModuleOption OptionName=\"a b\"><OptionValue>y</OptionValue></ModuleOption>\n</SurvivorFixData>";
    let invalid = FixData::validate(doc).unwrap_err();
    assert_eq!(
        invalid.lines(),
        [
            "3:1: option name 'module' is reserved",
            "4:1: option name 'a b' is not letters, digits, '_', '-' and '.'"
        ]
    );
}

#[test]
fn option_values_with_markup_and_non_ascii_survive_a_round_trip() {
    let mut options = Options::new();
    options.push("note", "<&>\"' é ü 日本 🎉\r\n  spaced  ");
    options.push("service", "sshd");
    options.push("service", "cron");
    let data = FixData {
        timeout: Some(30),
        options,
    };
    let xml = data.to_xml().unwrap();
    // Latin-1 bytes, references beyond it, only & < > escaped.
    let text: String = xml.iter().map(|&b| char::from(b)).collect();
    assert!(text.starts_with("<?xml version=\"1.0\" encoding=\"iso-8859-1\"?>\n<SurvivorFixData"));
    assert!(text.contains("<OptionValue>&lt;&amp;&gt;\"' \u{e9} \u{fc} &#26085;&#26412; &#127881;&#13;\n  spaced  </OptionValue>"), "{text}");
    assert_eq!(text.lines().nth(2), Some(" <Timeout>30</Timeout>"));
    assert_eq!(FixData::validate(&xml).unwrap(), data);
}

#[test]
fn check_documents_round_trip() {
    let r = CheckResult::validate(&fixture("check_result_1_1.xml")).unwrap();
    assert_eq!(r.host.as_deref(), Some("h1"));
    assert_eq!(r.return_code, ReturnCode::WARNING);
    assert_eq!(r.scalar, "93.5");
    assert_eq!(r.duration_ms, Some(1000));
    assert_eq!(CheckResult::validate(&r.to_xml().unwrap()).unwrap(), r);
    let old = CheckResult {
        version: CheckResultVersion::V1_0,
        duration_ms: None,
        ..r
    };
    assert_eq!(CheckResult::validate(&old.to_xml().unwrap()).unwrap(), old);
    let data = CheckData {
        hosts: vec!["a".into(), "b".into()],
        timeout: Some(10),
        options: [("port", "22")].into_iter().collect(),
    };
    assert_eq!(CheckData::validate(&data.to_xml().unwrap()).unwrap(), data);
    let no_host = b"<SurvivorCheckData Version=\"1.0\"><Timeout>1</Timeout></SurvivorCheckData>";
    assert!(CheckData::parse(no_host).is_err());
}

fn xml_char() -> impl Strategy<Value = char> {
    prop_oneof![
        Just('\t'),
        Just('\n'),
        Just('\r'),
        Just('&'),
        Just('<'),
        Just('>'),
        Just('"'),
        proptest::char::range('\u{20}', '\u{7e}'),
        proptest::char::range('\u{80}', '\u{ff}'),
        proptest::char::range('\u{100}', '\u{d7ff}'),
        proptest::char::range('\u{e000}', '\u{fffd}'),
        proptest::char::range('\u{10000}', '\u{10ffff}'),
    ]
}

fn xml_string() -> impl Strategy<Value = String> {
    proptest::collection::vec(xml_char(), 0..40).prop_map(|v| v.into_iter().collect())
}

fn return_code() -> impl Strategy<Value = ReturnCode> {
    prop_oneof![Just(0i64), Just(1), Just(4), 20i64..=1000]
        .prop_map(|v| ReturnCode::new(v).unwrap())
}

proptest! {
    #[test]
    fn any_written_fix_result_parses_back(code in return_code(), comment in xml_string()) {
        let doc = FixResult::new(code, comment);
        prop_assert_eq!(FixResult::validate(&doc.to_xml().unwrap()).unwrap(), doc);
    }

    #[test]
    fn any_written_fix_data_parses_back(
        timeout in proptest::option::of(0u64..100_000),
        opts in proptest::collection::vec(("[A-Za-z0-9.-][A-Za-z0-9_.-]{0,8}", xml_string()), 0..6),
    ) {
        let options: Options = opts.into_iter().filter(|(n, _)| n != "module").collect();
        let data = FixData { timeout, options };
        prop_assert_eq!(FixData::validate(&data.to_xml().unwrap()).unwrap(), data);
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = FixResult::parse(&bytes);
        let _ = FixData::parse(&bytes);
        let _ = CheckResult::parse(&bytes);
        let _ = CheckData::parse(&bytes);
    }

    #[test]
    fn mutated_documents_never_panic(cut in 0usize..200, byte in any::<u8>(), at in 0usize..200) {
        let mut bytes = fixture("check_result_1_1.xml");
        let at = at % bytes.len();
        bytes[at] = byte;
        bytes.truncate(cut.max(at + 1));
        let _ = CheckResult::parse(&bytes);
        let _ = FixResult::validate(&bytes);
    }
}

/// Found by the fuzzer: a raw control character in a Latin-1 document was accepted, and the
/// accepted document could not be written back.
#[test]
fn regression_control_character_in_latin1_text_is_refused() {
    let bytes = b"<?xml version=\"1.0\" encoding=\"iso-8859-1\"?>\n<SurvivorFixResult Version=\"1.0\">\n <ReturnCode>0</ReturnCode>\n <Comment>re\xe9\x16</Comment>\n</SurvivorFixResult>\n";
    let err = FixResult::parse(bytes).unwrap_err();
    assert_eq!(err.kind, ErrorKind::IllegalChar('\u{16}'));
    assert_eq!(err.pos.line, 4);
}
