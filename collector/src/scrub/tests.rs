use std::borrow::Cow;
use std::collections::BTreeMap;

use proptest::prelude::*;
use serde_json::{Value, json};

use super::detect::luhn_valid;
use super::*;
use crate::config::{ScrubOverride, ScrubPattern};

fn scrubber() -> Scrubbers {
    Scrubbers::default()
}

fn clean(text: &str) -> String {
    let mut tally = Redactions::default();
    scrubber()
        .for_site("any")
        .text(text, Field::Title, &mut tally)
        .into_owned()
}

#[test]
fn the_issue_example() {
    let s = scrubber();
    let s = s.for_site("shop");
    let mut tally = Redactions::default();
    assert_eq!(
        s.path("/account/alice@example.com/orders", Field::Path, &mut tally),
        "/account/[email]/orders"
    );
    assert_eq!(
        s.path(
            "/account/alice%40example.com/orders",
            Field::Path,
            &mut tally
        ),
        "/account/[email]/orders"
    );
    assert_eq!(
        s.text(
            "Welcome back, alice@example.com | call +49 170 5550123",
            Field::Title,
            &mut tally
        ),
        "Welcome back, [email] | call [phone]"
    );
    let mut props: BTreeMap<String, Value> = serde_json::from_value(json!({
        "contact": "alice@example.com",
        "iban": "DE89 3704 0044 0532 0130 00",
        "note": "card 4111 1111 1111 1111",
        "payment": "DE89370400440532013000",
        "value": 42,
    }))
    .expect("props");
    s.props(&mut props, &mut tally);
    assert_eq!(
        Value::Object(props.into_iter().collect()),
        json!({"contact": "[email]", "note": "card [card]", "payment": "[iban]", "value": 42})
    );
    assert_eq!(tally.count(Field::Path, Kind::Email), 2);
    assert_eq!(tally.count(Field::Title, Kind::Phone), 1);
    assert_eq!(tally.count(Field::Props, Kind::Property), 1);
    assert_eq!(tally.count(Field::Props, Kind::Card), 1);
    assert_eq!(tally.count(Field::Props, Kind::Iban), 1);
}

#[test]
fn examples_of_each_kind() {
    let cases = [
        (
            "Mail to bob.smith+news@mail.example.co.uk now",
            "Mail to [email] now",
        ),
        ("jörg@müller.de", "[email]"),
        ("mailto:x@y.io?subject=hi", "mailto:[email]?subject=hi"),
        ("Tel.: +49 (0)30 1234567", "Tel.: [phone]"),
        ("Tel 0049 30 12345678", "Tel [phone]"),
        ("Handy 0170/5550123", "Handy [phone]"),
        ("(030) 1234567", "[phone]"),
        ("ruf an: 01705550123!", "ruf an: [phone]!"),
        ("Appelez le 01 23 45 67 89", "Appelez le [phone]"),
        ("Appelez le 01.23.45.67.89", "Appelez le [phone]"),
        ("+44 20 7946 0958", "[phone]"),
        ("Call (555) 234-5678 today", "Call [phone] today"),
        ("1-800-555-0199", "[phone]"),
        ("IBAN: GB82 WEST 1234 5698 7654 32.", "IBAN: [iban]."),
        ("fr1420041010050500013m02606", "[iban]"),
        ("Amex 3782 822463 10005", "Amex [card]"),
        ("5555-5555-5555-4444 exp 12/28", "[card] exp 12/28"),
        ("visa 4222222222222", "visa [card]"),
        ("Order 4711, call 0170 5550123", "Order 4711, call [phone]"),
    ];
    for (input, want) in cases {
        assert_eq!(clean(input), want, "{input}");
    }
}

#[test]
fn lookalikes_are_left_alone() {
    for text in [
        "Order #100234 confirmed",
        "Bestellung 4711-2026-0815",
        "Rechnung RE-2026-000123 vom 03.12.2026",
        "Lieferung am 03.12.2026 10 Uhr",
        "Preis: 1.299,00 € statt 1.499,00 €",
        "Only $19.99 – was $24.99",
        "ISBN 978-3-16-148410-0",
        "ISBN 0-306-40615-2",
        "01067 Dresden, Hauptstr. 5",
        "EAN 4006381333931",
        "GTIN 4012345678901",
        "Version 2.10.3 released 2026-12-03",
        "192.168.100.200",
        "Artikel 100200300",
        "Sizes 36 38 40 42 44",
        "12/03/2026 14:30",
        "Tracking 00340434161234567890",
        "Kundennummer 1234567890",
        "Coordinates 52.520008, 13.404954",
        "DE ist ein Land, AT 20 auch",
    ] {
        assert_eq!(clean(text), text);
    }
}

#[test]
fn nothing_allocated_for_clean_text() {
    let s = scrubber();
    let s = s.for_site("shop");
    let mut tally = Redactions::default();
    assert!(matches!(
        s.text("Winter boots | Shop", Field::Title, &mut tally),
        Cow::Borrowed(_)
    ));
    assert!(matches!(
        s.path("/products/boots-42/reviews", Field::Path, &mut tally),
        Cow::Borrowed(_)
    ));
    assert!(tally.is_empty());
}

#[test]
fn paths_keep_unchanged_segments_byte_for_byte() {
    let s = scrubber();
    let mut tally = Redactions::default();
    assert_eq!(
        s.for_site("x")
            .path("/a%20b/caf%C3%A9/bob%40x.org/", Field::Path, &mut tally),
        "/a%20b/caf%C3%A9/[email]/"
    );
}

#[test]
fn path_ids_when_configured() {
    let config = ScrubConfig {
        path_ids: true,
        ..Default::default()
    };
    let s = Scrubbers::new(&config, &[]).expect("compiles");
    let mut tally = Redactions::default();
    assert_eq!(
        s.for_site("x").path(
            "/orders/1234567/items/550e8400-e29b-41d4-a716-446655440000/p/12",
            Field::Path,
            &mut tally
        ),
        "/orders/[id]/items/[id]/p/12"
    );
    assert_eq!(tally.count(Field::Path, Kind::Id), 2);
    // Off by default.
    assert_eq!(
        scrubber()
            .for_site("x")
            .path("/orders/1234567", Field::Path, &mut tally),
        "/orders/1234567"
    );
}

#[test]
fn property_names_that_announce_personal_data() {
    let s = scrubber();
    let mut tally = Redactions::default();
    let mut props: BTreeMap<String, Value> = serde_json::from_value(json!({
        "email": "x", "E-Mail": "x", "customer_email": "x", "phone": 1, "tel": "x",
        "name": "Alice", "firstName": "Alice", "last_name": "x", "billing_address": "x",
        "street": "x", "password": "x", "iban": "x",
        "product_name": "Boots", "category": "shoes", "value": 12.5, "bob@x.org": 1,
        "card_as_number": 4111111111111111u64,
    }))
    .expect("props");
    s.for_site("x").props(&mut props, &mut tally);
    assert_eq!(
        Value::Object(props.into_iter().collect()),
        json!({"product_name": "Boots", "category": "shoes", "value": 12.5, "card_as_number": "[card]"})
    );
    assert_eq!(tally.count(Field::Props, Kind::Property), 12);
    assert_eq!(tally.count(Field::Props, Kind::Email), 1);
}

#[test]
fn site_overrides_and_patterns() {
    let mut config = ScrubConfig {
        patterns: vec![ScrubPattern {
            name: "customer_no".into(),
            regex: r"KD-\d{6}".into(),
        }],
        ..Default::default()
    };
    config.sites.insert(
        "blog".into(),
        ScrubOverride {
            phone: Some(false),
            keep_props: vec!["name".into()],
            drop_props: vec!["nickname".into()],
            ..Default::default()
        },
    );
    let sites = [crate::config::SiteConfig {
        id: "blog".into(),
        hosts: vec!["blog.example".into()],
    }];
    let s = Scrubbers::new(&config, &sites).expect("compiles");
    let mut tally = Redactions::default();
    let text = "KD-123456 call 0170 5550123";
    assert_eq!(
        s.for_site("shop").text(text, Field::Title, &mut tally),
        "[customer_no] call [phone]"
    );
    assert_eq!(
        s.for_site("blog").text(text, Field::Title, &mut tally),
        "[customer_no] call 0170 5550123"
    );
    let mut props: BTreeMap<String, Value> =
        serde_json::from_value(json!({"name": "Post title", "nickname": "x"})).expect("props");
    s.for_site("blog").props(&mut props, &mut tally);
    assert_eq!(props.keys().collect::<Vec<_>>(), ["name"]);

    // Mistakes are refused at start-up, not ignored.
    config.sites.insert("typo".into(), ScrubOverride::default());
    let err = Scrubbers::new(&config, &sites).expect_err("unknown site");
    assert!(err.contains("typo"), "{err}");
    let bad = ScrubConfig {
        patterns: vec![ScrubPattern {
            name: "x".into(),
            regex: "a*".into(),
        }],
        ..Default::default()
    };
    assert!(Scrubbers::new(&bad, &[]).is_err());
    let disabled = ScrubConfig {
        enabled: false,
        ..Default::default()
    };
    let s = Scrubbers::new(&disabled, &[]).expect("compiles");
    assert_eq!(
        s.for_site("x").text("bob@x.org", Field::Title, &mut tally),
        "bob@x.org"
    );
}

// ---------------------------------------------------------------------------------
// Generated personal data is always caught

fn filler() -> impl Strategy<Value = String> {
    // Words and punctuation; never a digit or `@` right next to the embedded value.
    proptest::collection::vec(
        prop_oneof![
            "[A-Za-zäöüß]{1,10}",
            Just("|".to_owned()),
            Just("-".to_owned()),
            Just(":".to_owned()),
            Just("Order 4711".to_owned()),
            Just("ab 19,99 €".to_owned()),
        ],
        0..5,
    )
    .prop_map(|w| w.join(" "))
}

fn email() -> impl Strategy<Value = String> {
    (
        "[a-z0-9][a-z0-9._+-]{0,14}[a-z0-9]",
        proptest::collection::vec("[a-z0-9]([a-z0-9-]{0,8}[a-z0-9])?", 1..3),
        "[a-z]{2,6}",
    )
        .prop_map(|(local, labels, tld)| format!("{local}@{}.{tld}", labels.join(".")))
}

fn digits(n: usize) -> impl Strategy<Value = String> {
    proptest::collection::vec(0u8..10, n)
        .prop_map(|d| d.iter().map(|x| (b'0' + x) as char).collect())
}

fn nonzero_digits(n: usize) -> impl Strategy<Value = String> {
    (1u8..10, digits(n - 1)).prop_map(|(first, rest)| format!("{first}{rest}"))
}

fn phone() -> impl Strategy<Value = String> {
    let sep = prop_oneof![Just(" "), Just("-"), Just("/"), Just("")];
    prop_oneof![
        // International: +country code, national number of 7 to 11 digits.
        (1usize..4, 7usize..12, prop::bool::ANY).prop_flat_map(|(cc, nat, dash)| {
            (nonzero_digits(cc), nonzero_digits(nat)).prop_map(move |(cc, nat)| {
                let (a, b) = nat.split_at(3);
                let s = if dash { "-" } else { " " };
                format!("+{cc} {a}{s}{b}")
            })
        }),
        // The same with 00.
        (2usize..4, 7usize..12).prop_flat_map(|(cc, nat)| {
            (nonzero_digits(cc), nonzero_digits(nat)).prop_map(|(cc, nat)| format!("00{cc} {nat}"))
        }),
        // National with trunk prefix: 0 + area (2-4) + subscriber, 9 to 12 digits.
        (2usize..5, sep).prop_flat_map(|(area, sep)| {
            let subscriber = (5.max(8 - area)..=11 - area).prop_flat_map(digits);
            (nonzero_digits(area), subscriber)
                .prop_map(move |(area, sub)| format!("0{area}{sep}{sub}"))
        }),
        (2usize..5).prop_flat_map(|area| {
            (nonzero_digits(area), digits(10 - area)).prop_map(|(a, s)| format!("(0{a}) {s}"))
        }),
        // French pairs.
        (1u8..10, digits(8)).prop_map(|(d, rest)| {
            let pairs: Vec<&str> = (0..4).map(|i| &rest[i * 2..i * 2 + 2]).collect();
            format!("0{d} {}", pairs.join(" "))
        }),
        // North American.
        (2u8..10, digits(2), 2u8..10, digits(2), digits(4), 0..3).prop_map(
            |(a, aa, e, ee, x, style)| match style {
                0 => format!("({a}{aa}) {e}{ee}-{x}"),
                1 => format!("{a}{aa}-{e}{ee}-{x}"),
                _ => format!("1-{a}{aa}-{e}{ee}-{x}"),
            }
        ),
    ]
}

/// Valid IBANs of registered countries, plain or in groups of four.
fn iban() -> impl Strategy<Value = String> {
    (0..detect_lengths().len(), prop::bool::ANY).prop_flat_map(|(i, grouped)| {
        let (cc, len) = detect_lengths()[i];
        digits(len - 4).prop_map(move |bban| {
            let check = 98 - mod97(&format!("{bban}{cc}00"));
            let iban = format!("{cc}{check:02}{bban}");
            if grouped {
                iban.as_bytes()
                    .chunks(4)
                    .map(|c| std::str::from_utf8(c).expect("ascii"))
                    .collect::<Vec<_>>()
                    .join(" ")
            } else {
                iban
            }
        })
    })
}

fn detect_lengths() -> &'static [(&'static str, usize)] {
    &[
        ("DE", 22),
        ("AT", 20),
        ("CH", 21),
        ("FR", 27),
        ("GB", 22),
        ("NL", 18),
        ("NO", 15),
        ("IT", 27),
        ("ES", 24),
        ("PL", 28),
        ("MT", 31),
        ("LC", 32),
    ]
}

fn mod97(s: &str) -> u32 {
    s.bytes().fold(0, |rem, c| match c {
        b'0'..=b'9' => (rem * 10 + u32::from(c - b'0')) % 97,
        _ => (rem * 100 + u32::from(c - b'A') + 10) % 97,
    })
}

/// Luhn-valid numbers of the issuers' prefixes and lengths, plain or grouped. A
/// 13-digit Visa (no longer issued) is generated grouped only: an unbroken 13-digit
/// run that is also a valid EAN-13 barcode is read as the barcode.
fn card() -> impl Strategy<Value = String> {
    let issuer = prop_oneof![
        Just(("4", 16)),
        Just(("4", 19)),
        Just(("4", 13)),
        Just(("51", 16)),
        Just(("55", 16)),
        Just(("2221", 16)),
        Just(("2720", 16)),
        Just(("34", 15)),
        Just(("37", 15)),
        Just(("6011", 16)),
        Just(("65", 19)),
        Just(("3530", 16)),
        Just(("36", 14)),
        Just(("62", 17)),
        Just(("50", 18)),
    ];
    (issuer, 0..3).prop_flat_map(|((prefix, len), style)| {
        digits(len - prefix.len() - 1).prop_map(move |body| {
            let partial: Vec<u8> = format!("{prefix}{body}0")
                .bytes()
                .map(|b| b - b'0')
                .collect();
            let check = (0..10u8)
                .find(|c| {
                    let mut d = partial.clone();
                    *d.last_mut().expect("digit") = *c;
                    luhn_valid(&d)
                })
                .expect("a check digit");
            let number = format!("{prefix}{body}{check}");
            let style = if len == 13 && style == 0 { 1 } else { style };
            match style {
                0 => number,
                _ => number
                    .as_bytes()
                    .chunks(4)
                    .map(|c| std::str::from_utf8(c).expect("ascii"))
                    .collect::<Vec<_>>()
                    .join(if style == 1 { " " } else { "-" }),
            }
        })
    })
}

fn caught(secret: &str, text: &str, out: &str) -> Result<(), TestCaseError> {
    prop_assert!(
        !out.contains(secret),
        "{secret:?} survived in {out:?} (from {text:?})"
    );
    prop_assert!(out.contains('['), "no marker in {out:?}");
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn emails_are_caught(before in filler(), secret in email(), after in filler()) {
        let text = format!("{before} {secret} {after}");
        caught(&secret, &text, &clean(&text))?;
    }

    #[test]
    fn phones_are_caught(before in filler(), secret in phone(), after in filler()) {
        let text = format!("{before} {secret}, {after}");
        caught(&secret, &text, &clean(&text))?;
    }

    #[test]
    fn ibans_are_caught(before in filler(), secret in iban(), after in filler()) {
        let text = format!("{before} {secret} {after}");
        caught(&secret, &text, &clean(&text))?;
    }

    #[test]
    fn cards_are_caught(before in filler(), secret in card(), after in filler()) {
        let text = format!("{before} {secret} {after}");
        caught(&secret, &text, &clean(&text))?;
    }

    #[test]
    fn in_paths_too(secret in prop_oneof![email(), phone(), iban(), card()]) {
        let s = scrubber();
        let mut tally = Redactions::default();
        let encoded = utf8_percent_encode(&secret, SEGMENT).to_string();
        let path = format!("/account/{encoded}/orders");
        let out = s.for_site("x").path(&path, Field::Path, &mut tally).into_owned();
        prop_assert!(!out.contains(&encoded), "{out}");
        prop_assert!(out.starts_with("/account/") && out.ends_with("/orders"), "{out}");
    }

    /// Order numbers, prices, dates, ISBNs, postcodes, barcodes and times between
    /// words are left as they are.
    #[test]
    fn lookalikes_are_unchanged(parts in proptest::collection::vec(lookalike(), 1..6)) {
        let text = parts.join(" und ");
        prop_assert_eq!(clean(&text), text);
    }
}

fn lookalike() -> impl Strategy<Value = String> {
    prop_oneof![
        // Order and invoice numbers.
        nonzero_digits(6).prop_map(|n| format!("Order #{n}")),
        (nonzero_digits(4), nonzero_digits(4)).prop_map(|(a, b)| format!("Bestellung {a}-{b}")),
        digits(6).prop_map(|n| format!("RE-2026-{n}")),
        // Prices.
        (1u32..10_000, 0u32..100).prop_map(|(e, c)| format!("{e},{c:02} €")),
        (1u32..1000, 0u32..100).prop_map(|(e, c)| format!("${e}.{c:02}")),
        (1u32..1000, 0u32..1000).prop_map(|(t, h)| format!("{t}.{h:03},00 €")),
        // Dates and times.
        (1u32..29, 1u32..13, 1990u32..2040).prop_map(|(d, m, y)| format!("{d:02}.{m:02}.{y}")),
        (1u32..29, 1u32..13, 1990u32..2040).prop_map(|(d, m, y)| format!("{y}-{m:02}-{d:02}")),
        (1u32..29, 1u32..13, 1990u32..2040).prop_map(|(d, m, y)| format!("{m:02}/{d:02}/{y}")),
        (0u32..24, 0u32..60).prop_map(|(h, m)| format!("{h:02}:{m:02} Uhr")),
        // ISBNs.
        (0u8..10, digits(2), digits(6), 0u8..10)
            .prop_map(|(a, b, c, d)| format!("ISBN 978-{a}-{b}-{c}-{d}")),
        (0u8..10, digits(3), digits(5), 0u8..10)
            .prop_map(|(a, b, c, d)| format!("ISBN {a}-{b}-{c}-{d}")),
        // Postcodes with a town.
        digits(5).prop_map(|p| format!("{p} Dresden")),
        // Quantities and sizes.
        (1u32..100).prop_map(|n| format!("{n} Stück")),
        (30u32..50, 30u32..50).prop_map(|(a, b)| format!("Größe {a}/{b}")),
    ]
}

// ---------------------------------------------------------------------------------
// False positives on real-looking titles and paths

/// Page titles and paths of the kind shops, publishers and SaaS sites send, with no
/// personal data in them (`corpus.txt`, one per line).
const CORPUS: &str = include_str!("corpus.txt");

#[test]
fn false_positive_rate_on_a_corpus_of_titles_and_paths() {
    let s = scrubber();
    let s = s.for_site("x");
    let mut total = 0;
    let mut changed = Vec::new();
    for line in CORPUS
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        total += 1;
        let mut tally = Redactions::default();
        let out = if line.starts_with('/') {
            s.path(line, Field::Path, &mut tally)
        } else {
            s.text(line, Field::Title, &mut tally)
        };
        if out != line {
            changed.push(format!("{line:?} -> {out:?}"));
        }
    }
    let rate = changed.len() as f64 / total as f64;
    println!(
        "false positives: {} of {total} titles and paths ({:.2} %)",
        changed.len(),
        rate * 100.0
    );
    for c in &changed {
        println!("  {c}");
    }
    assert!(total >= 300, "corpus too small: {total}");
    assert!(changed.is_empty(), "false positives: {changed:#?}");
}
