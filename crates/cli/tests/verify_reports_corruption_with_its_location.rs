//! A byte flipped inside a sealed segment: `journal verify` exits 1 and names the topic,
//! partition, offset, file and byte; records before it still read.

mod common;
use common::*;

#[test]
fn a_flipped_byte_in_a_sealed_segment_is_reported() {
    let s = Scratch::new();
    let d = s.data_str();
    run(&[
        "journal",
        "create-topic",
        d,
        "audit.v1",
        "--durability",
        "os",
        "--segment-bytes",
        "4096",
    ])
    .expect_code(0);
    run_with_stdin(
        &["journal", "append", d, "audit.v1", "--batch-size", "4"],
        &lines(200),
    )
    .expect_code(0);

    let report = json(
        &run(&["journal", "inspect", d, "--json"])
            .expect_code(0)
            .stdout,
    );
    let segments = report["topics"][0]["partitions"][0]["segments"]
        .as_array()
        .unwrap()
        .clone();
    let sealed: Vec<_> = segments.iter().filter(|s| s["sealed"] == true).collect();
    assert!(
        sealed.len() >= 2,
        "expected several sealed segments: {segments:?}"
    );
    let victim = sealed[1];
    let (base, next) = (
        victim["base_offset"].as_u64().unwrap(),
        victim["next_offset"].as_u64().unwrap(),
    );
    let file = path_of(&victim["file"], &s.data);
    let mut bytes = std::fs::read(&file).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 0x5a;
    std::fs::write(&file, &bytes).unwrap();

    let r = run(&["journal", "verify", d]).expect_code(1);
    let line = r
        .stdout
        .lines()
        .find(|l| l.starts_with("CORRUPT"))
        .unwrap_or_else(|| panic!("{}", r.stdout));
    assert!(line.contains("topic `audit.v1`"), "{line}");
    assert!(line.contains("partition 0"), "{line}");
    assert!(line.contains("offset "), "{line}");
    let name = file.file_name().unwrap().to_str().unwrap();
    assert!(line.contains(name), "{line}");

    let vj = json(
        &run(&["journal", "verify", d, "--json"])
            .expect_code(1)
            .stdout,
    );
    let problems = vj["problems"].as_array().unwrap();
    assert_eq!(problems.len(), 1, "{problems:?}");
    let p = &problems[0];
    assert_eq!(p["topic"], "audit.v1");
    assert_eq!(p["partition"], 0);
    let offset = p["offset"].as_u64().unwrap();
    assert!(
        (base..next).contains(&offset),
        "offset {offset} outside the segment {base}..{next}"
    );
    assert!(p["position"].as_u64().unwrap() <= at as u64);

    // Reading never returns the corrupt record: either the records before it read fine, or
    // the command fails with exit code 1, naming the corruption.
    let r = run(&["journal", "read", d, "audit.v1"]);
    match r.code {
        0 => {
            let recs = json_lines(&r.stdout);
            assert!(
                recs.len() as u64 >= base && (recs.len() as u64) < 200,
                "{}",
                recs.len()
            );
        }
        1 => assert!(
            r.stderr.contains("corruption") && r.stderr.contains("audit.v1"),
            "{}",
            r.stderr
        ),
        _ => panic!("read after corruption: exit {}\n{}", r.code, r.stderr),
    }
}
