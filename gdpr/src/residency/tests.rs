//! The residency checks against every source of a region, and their messages.

use super::*;

fn settings(eu_only: bool, lake: Option<&str>, broker: Option<&str>) -> ResidencySettings {
    ResidencySettings {
        eu_only,
        lake_region: lake.map(str::to_owned),
        broker_region: broker.map(str::to_owned),
    }
}

fn options(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn refused(s: &ResidencySettings, root: &str, opts: &[(&str, &str)]) -> String {
    match check(s, root, &options(opts)) {
        Ok(found) => panic!("expected a refusal, got {found:?}"),
        Err(err) => err.to_string(),
    }
}

#[test]
fn without_eu_only_nothing_is_refused_but_everything_is_reported() {
    let s = settings(false, None, Some("us-east-1"));
    let found = check(
        &s,
        "s3://bucket/lake",
        &options(&[("AWS_REGION", "us-east-1")]),
    )
    .expect("eu_only off refuses nothing");
    assert_eq!(
        found,
        Residency {
            lake: Some((
                "us-east-1".into(),
                Source::StorageOption("AWS_REGION".into())
            )),
            broker: Some("us-east-1".into()),
        }
    );
    let local = check(&settings(false, None, None), "./lake", &HashMap::new())
        .expect("a local lake without declarations is fine without eu_only");
    assert_eq!(
        local,
        Residency {
            lake: None,
            broker: None
        }
    );
}

#[test]
fn s3_in_frankfurt_with_brokers_in_germany_is_accepted() {
    let s = settings(true, None, Some("DE"));
    let found = check(
        &s,
        "s3://bucket/lake",
        &options(&[("AWS_REGION", "eu-central-1")]),
    )
    .expect("EU lake and brokers");
    assert_eq!(
        found.lake,
        Some((
            "eu-central-1".into(),
            Source::StorageOption("AWS_REGION".into())
        ))
    );
    assert_eq!(found.broker.as_deref(), Some("DE"));
}

#[test]
fn a_us_region_is_refused_naming_the_region_and_the_option() {
    let s = settings(true, None, Some("DE"));
    let message = refused(&s, "s3://bucket/lake", &[("AWS_REGION", "us-east-1")]);
    assert_eq!(
        message,
        "residency.eu_only is set but the lake region us-east-1 (from lake storage option \
         AWS_REGION) is outside the EU/EEA; move the lake or unset residency.eu_only"
    );
}

#[test]
fn a_local_lake_must_declare_its_region() {
    let s = settings(true, None, Some("DE"));
    for root in ["./lake", "/var/lib/spur/lake", "file:///var/lib/spur/lake"] {
        let message = refused(&s, root, &[("AWS_REGION", "eu-central-1")]);
        assert!(
            message.contains("cannot detect where this machine is"),
            "{message}"
        );
        assert!(message.contains("residency.lake_region"), "{message}");
    }
    let declared = settings(true, Some("DE"), Some("DE"));
    let found = check(&declared, "./lake", &HashMap::new()).expect("declared DE");
    assert_eq!(found.lake, Some(("DE".into(), Source::Declared)));
}

#[test]
fn london_is_refused_with_the_uk_explanation() {
    let s = settings(true, None, Some("DE"));
    let message = refused(&s, "s3://bucket/lake", &[("region", "eu-west-2")]);
    assert!(message.contains("eu-west-2"), "{message}");
    assert!(message.contains("United Kingdom"), "{message}");
    assert!(message.contains("adequacy decision"), "{message}");
    let message = refused(&settings(true, Some("DE"), Some("GB")), "./lake", &[]);
    assert!(message.contains("residency.broker_region GB"), "{message}");
    assert!(message.contains("United Kingdom"), "{message}");
}

#[test]
fn zurich_is_refused_as_outside_the_eu_and_eea() {
    for region in ["europe-west6", "eu-central-2", "switzerlandnorth", "CH"] {
        let s = settings(true, Some(region), Some("DE"));
        let message = refused(&s, "gs://bucket/lake", &[]);
        assert!(message.contains(region), "{message}");
        assert!(message.contains("Switzerland"), "{message}");
        assert!(
            message.contains("(from residency.lake_region)"),
            "{message}"
        );
    }
    let message = refused(
        &settings(true, Some("europe-west2"), Some("DE")),
        "./lake",
        &[],
    );
    assert!(message.contains("United Kingdom"), "{message}");
}

#[test]
fn a_declared_region_that_contradicts_the_storage_options_is_an_error() {
    for eu_only in [false, true] {
        let s = settings(eu_only, Some("eu-west-1"), Some("DE"));
        let err = check(
            &s,
            "s3://bucket/lake",
            &options(&[("AWS_REGION", "eu-central-1")]),
        )
        .expect_err("two places for the lake");
        assert!(
            matches!(err, ResidencyError::Contradiction { .. }),
            "{err:?}"
        );
        let message = err.to_string();
        assert!(message.contains("eu-central-1 (from lake storage option AWS_REGION)"));
        assert!(message.contains("eu-west-1 (from residency.lake_region)"));
    }
    // The same place named as a region and as its country is no contradiction.
    let s = settings(true, Some("de"), Some("DE"));
    check(
        &s,
        "s3://bucket/lake",
        &options(&[("AWS_REGION", "eu-central-1")]),
    )
    .expect("eu-central-1 is in DE");
}

#[test]
fn eu_only_needs_the_broker_region() {
    let message = refused(
        &settings(true, None, None),
        "s3://bucket/lake",
        &[("AWS_REGION", "eu-central-1")],
    );
    assert_eq!(
        message,
        "residency.eu_only is set but residency.broker_region is not declared; name where \
         the Kafka brokers run (e.g. \"eu-central-1\" or \"DE\")"
    );
    let message = refused(
        &settings(true, Some("DE"), Some("us-east-1")),
        "./lake",
        &[],
    );
    assert!(message.contains("residency.broker_region us-east-1 is outside the EU/EEA"));
}

#[test]
fn names_and_option_keys_are_case_insensitive() {
    for (lake, broker) in [
        ("EU-CENTRAL-1", "de"),
        ("Europe-West3", "De"),
        ("WestEurope", "fr"),
    ] {
        let found = check(
            &settings(true, Some(lake), Some(broker)),
            "./lake",
            &HashMap::new(),
        )
        .expect("EU names in any case");
        assert_eq!(found.lake.map(|(r, _)| r).as_deref(), Some(lake));
    }
    let found = check(
        &settings(true, None, Some("SE")),
        "S3://bucket/lake",
        &options(&[("aws_region", "EU-NORTH-1")]),
    )
    .expect("lower-case key, upper-case value");
    assert_eq!(
        found.lake,
        Some((
            "EU-NORTH-1".into(),
            Source::StorageOption("aws_region".into())
        ))
    );
}

#[test]
fn norway_iceland_and_liechtenstein_are_in_the_eea() {
    for code in ["NO", "no", "IS", "LI", "norwayeast"] {
        check(
            &settings(true, Some(code), Some(code)),
            "./lake",
            &HashMap::new(),
        )
        .expect("EEA");
    }
}

#[test]
fn unknown_names_are_refused_as_unrecognised() {
    let message = refused(
        &settings(true, Some("frankfurt"), Some("DE")),
        "./lake",
        &[],
    );
    assert!(message.contains("not a region Spur knows"), "{message}");
    assert!(message.contains("ISO 3166"), "{message}");
    let message = refused(
        &settings(true, Some("DE"), Some("asia-east1")),
        "./lake",
        &[],
    );
    assert!(message.contains("outside the EU/EEA"), "{message}");
}

#[test]
fn the_region_in_an_aws_endpoint_counts_and_other_endpoints_do_not() {
    let s = settings(true, None, Some("DE"));
    let found = check(
        &s,
        "s3a://bucket/lake",
        &options(&[("AWS_ENDPOINT_URL", "https://s3.eu-west-3.amazonaws.com")]),
    )
    .expect("Paris endpoint");
    assert_eq!(
        found.lake,
        Some((
            "eu-west-3".into(),
            Source::EndpointHost("AWS_ENDPOINT_URL".into())
        ))
    );
    let err = check(
        &s,
        "s3://bucket/lake",
        &options(&[
            ("endpoint", "https://s3-eu-west-1.amazonaws.com"),
            ("AWS_REGION", "us-east-1"),
        ]),
    )
    .expect_err("endpoint and region disagree");
    assert!(
        matches!(err, ResidencyError::Contradiction { .. }),
        "{err:?}"
    );
    // MinIO's placeholder region says nothing about where MinIO runs.
    let minio = [
        ("AWS_ENDPOINT_URL", "http://minio.internal:9000"),
        ("AWS_REGION", "us-east-1"),
    ];
    let message = refused(&s, "s3://bucket/lake", &minio);
    assert!(
        message.contains("S3-compatible store at minio.internal"),
        "{message}"
    );
    let declared = settings(true, Some("DE"), Some("DE"));
    check(&declared, "s3://bucket/lake", &options(&minio)).expect("declared for MinIO");
}

#[test]
fn gcs_and_azure_roots_rely_on_the_declared_region() {
    let s = settings(true, None, Some("DE"));
    assert!(refused(&s, "gs://bucket/lake", &[]).contains("Google Cloud Storage"));
    assert!(refused(&s, "abfss://c@account.dfs.core.windows.net/lake", &[]).contains("Azure"));
    check(
        &settings(true, Some("EU"), Some("DE")),
        "gs://bucket/lake",
        &HashMap::new(),
    )
    .expect("GCS multi-region EU");
}
