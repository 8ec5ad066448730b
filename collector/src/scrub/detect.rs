//! The detectors: pure functions from a text to the byte spans of personal data in it.
//!
//! - e-mail addresses: a regular expression (Unicode letters, `%40` for `@`);
//! - payment cards: 13 to 19 digits, alone or in groups separated by single spaces or
//!   dashes, with an issuer's prefix and length (Visa, Mastercard, Amex, Discover,
//!   JCB, Diners, UnionPay, Maestro, Mir) and a valid Luhn check digit;
//! - phone numbers: international (`+49 170 5550123`, `0049 …`), national with a trunk
//!   prefix (`0170 5550123`, `(030) 1234567`, `030/1234567`, `01 23 45 67 89`) and
//!   North American (`(555) 123-4567`, `1-800-555-0199`) formats;
//! - IBANs: a known country's length and the ISO 7064 mod-97 check, with or without
//!   the usual groups of four;
//! - identifiers in path segments (opt-in): long digit runs, UUIDs, long hex tokens.
//!
//! Numbers are read as *runs*: digit groups joined by short separators (space, `-`,
//! `.`, `/`, parentheses, no-break space). A card or phone number is a window of whole
//! groups of a run, so `Order 4711, call 0170 5550123` redacts only the phone number
//! and a card followed by its expiry date is still found. What is deliberately not a
//! phone number: dates (`03.12.2026`), group-of-one prefixes (ISBN-10 `0-306-40615-2`),
//! numbers without a trunk or country prefix (order numbers, prices, postcodes), and
//! 13-digit runs that are valid GTIN/EAN-13 barcodes are not cards.

use std::sync::LazyLock;

use regex::Regex;

/// What was found. The metric label and the marker that replaces it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    Email,
    Phone,
    Iban,
    Card,
    /// An identifier in a path segment (`path_ids`).
    Id,
    /// A site's own pattern (`patterns`); its marker is `[<name>]`.
    Pattern,
    /// A property whose name announces personal data, dropped whole.
    Property,
}

impl Kind {
    pub const COUNT: usize = 7;
    pub const ALL: [Kind; Kind::COUNT] = [
        Kind::Email,
        Kind::Phone,
        Kind::Iban,
        Kind::Card,
        Kind::Id,
        Kind::Pattern,
        Kind::Property,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Email => "email",
            Kind::Phone => "phone",
            Kind::Iban => "iban",
            Kind::Card => "card",
            Kind::Id => "id",
            Kind::Pattern => "pattern",
            Kind::Property => "property",
        }
    }

    /// The fixed text a match is replaced by (a site pattern's is its own name).
    pub fn marker(self) -> &'static str {
        match self {
            Kind::Email => "[email]",
            Kind::Phone => "[phone]",
            Kind::Iban => "[iban]",
            Kind::Card => "[card]",
            Kind::Id => "[id]",
            Kind::Pattern => "[redacted]",
            Kind::Property => "[redacted]",
        }
    }
}

/// A match: bytes `start..end` of the text. `pattern` indexes the site's patterns
/// when `kind` is [`Kind::Pattern`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Span {
    pub start: usize,
    pub end: usize,
    pub kind: Kind,
    pub pattern: usize,
}

impl Span {
    fn new(start: usize, end: usize, kind: Kind) -> Self {
        Self {
            start,
            end,
            kind,
            pattern: 0,
        }
    }
}

/// Which built-in detectors run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Detectors {
    pub email: bool,
    pub phone: bool,
    pub iban: bool,
    pub card: bool,
}

impl Detectors {
    pub const ALL: Detectors = Detectors {
        email: true,
        phone: true,
        iban: true,
        card: true,
    };
    pub const NONE: Detectors = Detectors {
        email: false,
        phone: false,
        iban: false,
        card: false,
    };
}

/// The fewest digits any numeric detector needs (a Norwegian IBAN has 13, a phone
/// number at least 8): texts with fewer and no `@` are answered without a search.
const MIN_DIGITS: usize = 8;

/// Which searches a text needs, from one pass over its bytes without allocating:
/// the e-mail expression only runs on texts with an `@` (or `%40`), the numeric
/// detectors only on texts with enough digits. Most titles and paths need neither.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Needs {
    email: bool,
    numbers: bool,
}

impl Needs {
    pub fn any(self) -> bool {
        self.email || self.numbers
    }
}

pub fn needs(text: &str, detectors: Detectors) -> Needs {
    let numeric = detectors.phone || detectors.iban || detectors.card;
    let bytes = text.as_bytes();
    let (mut digits, mut at) = (0, false);
    for (i, &b) in bytes.iter().enumerate() {
        if b.is_ascii_digit() {
            digits += 1;
        } else if b == b'@' || (b == b'%' && bytes.get(i + 1..i + 3) == Some(b"40")) {
            at = true;
        }
    }
    Needs {
        email: detectors.email && at,
        numbers: numeric && digits >= MIN_DIGITS,
    }
}

/// Appends every built-in match in `text` to `out` (unordered, possibly overlapping).
pub fn find(text: &str, detectors: Detectors, needs: Needs, out: &mut Vec<Span>) {
    if needs.email {
        emails(text, out);
    }
    if needs.numbers && detectors.iban {
        ibans(text, out);
    }
    if needs.numbers && (detectors.card || detectors.phone) {
        numbers(text, detectors, out);
    }
}

// ---------------------------------------------------------------------------------
// E-mail addresses

/// Local part, `@` (or its percent-encoding), dot-separated domain labels that do not
/// start or end with a hyphen, and a top-level domain of at least two letters.
static EMAIL: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"[\p{L}\p{N}._+'-]+(?:@|%40)[\p{L}\p{N}](?:[\p{L}\p{N}-]*[\p{L}\p{N}])?(?:\.[\p{L}\p{N}](?:[\p{L}\p{N}-]*[\p{L}\p{N}])?)*\.\p{L}{2,}",
    )
    .expect("the e-mail expression compiles")
});

fn emails(text: &str, out: &mut Vec<Span>) {
    out.extend(
        EMAIL
            .find_iter(text)
            .map(|m| Span::new(m.start(), m.end(), Kind::Email)),
    );
}

// ---------------------------------------------------------------------------------
// IBANs

/// IBAN lengths by country (the SWIFT IBAN registry).
const IBAN_LENGTHS: &[(&[u8; 2], usize)] = &[
    (b"AD", 24),
    (b"AE", 23),
    (b"AL", 28),
    (b"AT", 20),
    (b"AZ", 28),
    (b"BA", 20),
    (b"BE", 16),
    (b"BG", 22),
    (b"BH", 22),
    (b"BR", 29),
    (b"BY", 28),
    (b"CH", 21),
    (b"CR", 22),
    (b"CY", 28),
    (b"CZ", 24),
    (b"DE", 22),
    (b"DK", 18),
    (b"DO", 28),
    (b"EE", 20),
    (b"EG", 29),
    (b"ES", 24),
    (b"FI", 18),
    (b"FO", 18),
    (b"FR", 27),
    (b"GB", 22),
    (b"GE", 22),
    (b"GI", 23),
    (b"GL", 18),
    (b"GR", 27),
    (b"GT", 28),
    (b"HR", 21),
    (b"HU", 28),
    (b"IE", 22),
    (b"IL", 23),
    (b"IQ", 23),
    (b"IS", 26),
    (b"IT", 27),
    (b"JO", 30),
    (b"KW", 30),
    (b"KZ", 20),
    (b"LB", 28),
    (b"LC", 32),
    (b"LI", 21),
    (b"LT", 20),
    (b"LU", 20),
    (b"LV", 21),
    (b"LY", 25),
    (b"MC", 27),
    (b"MD", 24),
    (b"ME", 22),
    (b"MK", 19),
    (b"MR", 27),
    (b"MT", 31),
    (b"MU", 30),
    (b"NL", 18),
    (b"NO", 15),
    (b"PK", 24),
    (b"PL", 28),
    (b"PS", 29),
    (b"PT", 25),
    (b"QA", 29),
    (b"RO", 24),
    (b"RS", 22),
    (b"SA", 24),
    (b"SC", 31),
    (b"SE", 24),
    (b"SI", 19),
    (b"SK", 24),
    (b"SM", 27),
    (b"ST", 25),
    (b"SV", 28),
    (b"TL", 23),
    (b"TN", 24),
    (b"TR", 26),
    (b"UA", 29),
    (b"VA", 22),
    (b"VG", 24),
    (b"XK", 20),
];

fn iban_length(country: [u8; 2]) -> Option<usize> {
    let country = country.map(|b| b.to_ascii_uppercase());
    IBAN_LENGTHS
        .iter()
        .find(|(c, _)| **c == country)
        .map(|(_, len)| *len)
}

/// ISO 7064 mod 97-10 over an IBAN's characters (the first four moved to the end),
/// letters counting 10 to 35.
fn iban_valid(chars: &[u8]) -> bool {
    let rotated = chars[4..].iter().chain(&chars[..4]);
    let mut rem: u32 = 0;
    for &c in rotated {
        rem = match c {
            b'0'..=b'9' => (rem * 10 + u32::from(c - b'0')) % 97,
            b'A'..=b'Z' => (rem * 100 + u32::from(c - b'A') + 10) % 97,
            b'a'..=b'z' => (rem * 100 + u32::from(c - b'a') + 10) % 97,
            _ => return false,
        };
    }
    rem == 1
}

fn ibans(text: &str, out: &mut Vec<Span>) {
    let bytes = text.as_bytes();
    let mut i = 0;
    while i + 4 <= bytes.len() {
        let starts_word = i == 0 || !bytes[i - 1].is_ascii_alphanumeric();
        let head = &bytes[i..i + 4];
        let shaped = head[0].is_ascii_alphabetic()
            && head[1].is_ascii_alphabetic()
            && head[2].is_ascii_digit()
            && head[3].is_ascii_digit();
        if let Some(end) = (starts_word && shaped).then(|| iban_at(bytes, i)).flatten() {
            out.push(Span::new(i, end, Kind::Iban));
            i = end;
            continue;
        }
        i += 1;
    }
}

/// The end of a valid IBAN starting at `start`, written plainly or in groups
/// separated by single spaces or dashes.
fn iban_at(bytes: &[u8], start: usize) -> Option<usize> {
    let len = iban_length([bytes[start], bytes[start + 1]])?;
    let mut chars = [0u8; 34];
    let mut n = 0;
    let mut i = start;
    while n < len {
        let b = *bytes.get(i)?;
        if b.is_ascii_alphanumeric() {
            chars[n] = b;
            n += 1;
            i += 1;
        } else if n >= 4
            && (b == b' ' || b == b'-')
            && bytes.get(i + 1).is_some_and(u8::is_ascii_alphanumeric)
        {
            i += 1;
        } else {
            return None;
        }
    }
    // A longer token glued to it is something else.
    if bytes.get(i).is_some_and(u8::is_ascii_alphanumeric) {
        return None;
    }
    iban_valid(&chars[..len]).then_some(i)
}

// ---------------------------------------------------------------------------------
// Numbers: payment cards and phone numbers

/// The most digit groups one run holds; a longer run continues as a new run.
const MAX_GROUPS: usize = 16;

/// How the separator before a group looks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Sep {
    /// The run's first group.
    None,
    Space,
    Dash,
    Dot,
    Slash,
    /// A parenthesis without a space, or a mixture.
    Other,
}

#[derive(Clone, Copy, Debug)]
struct Group {
    /// Bytes of the digits.
    start: usize,
    end: usize,
    /// Where a match starting at this group starts: before a `+` or `(` that
    /// directly precedes the digits.
    lead: usize,
    plus: bool,
    sep: Sep,
    /// Whether the separator before it holds a space (`4711 - 0170 5550123`).
    spaced: bool,
}

impl Group {
    const EMPTY: Group = Group {
        start: 0,
        end: 0,
        lead: 0,
        plus: false,
        sep: Sep::None,
        spaced: false,
    };

    fn digits(self) -> usize {
        self.end - self.start
    }
}

/// Digit groups joined by short separators, read without allocating.
struct Run {
    groups: [Group; MAX_GROUPS],
    n: usize,
}

fn is_sep_byte(b: u8) -> bool {
    matches!(b, b' ' | b'-' | b'.' | b'/' | b'(' | b')')
}

/// Length of a no-break or narrow no-break space at `i` (U+00A0, U+202F), else 0.
fn nbsp_at(bytes: &[u8], i: usize) -> usize {
    match bytes.get(i..) {
        Some([0xC2, 0xA0, ..]) => 2,
        Some([0xE2, 0x80, 0xAF, ..]) => 3,
        _ => 0,
    }
}

/// Reads the run starting at `i` (a digit), returning it and the byte after it.
fn read_run(bytes: &[u8], i: usize) -> (Run, usize) {
    let mut run = Run {
        groups: [Group::EMPTY; MAX_GROUPS],
        n: 0,
    };
    let mut pos = i;
    let mut sep = Sep::None;
    let mut spaced = false;
    loop {
        let start = pos;
        while pos < bytes.len() && bytes[pos].is_ascii_digit() {
            pos += 1;
        }
        let plus = start > 0 && bytes[start - 1] == b'+';
        let paren = start > 0 && bytes[start - 1] == b'(';
        let lead = if plus || paren { start - 1 } else { start };
        run.groups[run.n] = Group {
            start,
            end: pos,
            lead,
            plus,
            sep,
            spaced,
        };
        run.n += 1;
        if run.n == MAX_GROUPS {
            return (run, pos);
        }
        // Up to three separator characters, then digits (or `+` and digits).
        let mut j = pos;
        let mut seen = [false; 6];
        let mut count = 0;
        while count < 3 && j < bytes.len() {
            let b = bytes[j];
            if is_sep_byte(b) {
                seen[match b {
                    b' ' => 0,
                    b'-' => 1,
                    b'.' => 2,
                    b'/' => 3,
                    _ => 4,
                }] = true;
                j += 1;
            } else if nbsp_at(bytes, j) > 0 {
                seen[0] = true;
                j += nbsp_at(bytes, j);
            } else {
                break;
            }
            count += 1;
        }
        let plus_next =
            bytes.get(j) == Some(&b'+') && bytes.get(j + 1).is_some_and(u8::is_ascii_digit);
        let next_digit = bytes.get(j).is_some_and(u8::is_ascii_digit) || plus_next;
        if count == 0 || !next_digit {
            return (run, pos);
        }
        sep = match seen {
            // A space, with or without parentheses (`+49 (0)30`, `4711 (030)`).
            [true, false, false, false, _, _] => Sep::Space,
            [false, true, false, false, false, _] => Sep::Dash,
            [false, false, true, false, false, _] => Sep::Dot,
            [false, false, false, true, false, _] => Sep::Slash,
            _ => Sep::Other,
        };
        spaced = seen[0];
        pos = if plus_next { j + 1 } else { j };
    }
}

fn numbers(text: &str, detectors: Detectors, out: &mut Vec<Span>) {
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if !bytes[i].is_ascii_digit() {
            i += 1;
            continue;
        }
        let (run, end) = read_run(bytes, i);
        let glued = {
            let lead = run.groups[0].lead;
            lead > 0 && bytes[lead - 1].is_ascii_alphanumeric()
        };
        let mut g = 0;
        while g < run.n {
            let found = if detectors.card {
                card_at(bytes, &run, g)
            } else {
                None
            };
            let found = found.or_else(|| {
                (detectors.phone && !(g == 0 && glued))
                    .then(|| phone_at(bytes, &run, g))
                    .flatten()
            });
            match found {
                Some((last, kind)) => {
                    out.push(Span::new(run.groups[g].lead, run.groups[last].end, kind));
                    g = last + 1;
                }
                None => g += 1,
            }
        }
        i = end.max(i + 1);
    }
}

/// Digits of groups `first..=last`, in a fixed buffer (at most 19 are ever needed).
fn collect_digits(bytes: &[u8], run: &Run, first: usize, last: usize, buf: &mut [u8; 19]) -> usize {
    let mut n = 0;
    for g in &run.groups[first..=last] {
        for &b in &bytes[g.start..g.end] {
            if n == buf.len() {
                return n + 1;
            }
            buf[n] = b - b'0';
            n += 1;
        }
    }
    n
}

/// The longest window of whole groups from `first` that is a card number.
fn card_at(bytes: &[u8], run: &Run, first: usize) -> Option<(usize, Kind)> {
    let mut total = 0;
    let mut best = None;
    for last in first..run.n {
        let group = run.groups[last];
        if last > first && !matches!(group.sep, Sep::Space | Sep::Dash) {
            break;
        }
        total += group.digits();
        if total > 19 {
            break;
        }
        if total >= 13 {
            let mut digits = [0u8; 19];
            let n = collect_digits(bytes, run, first, last, &mut digits);
            let digits = &digits[..n];
            let barcode = first == last && n == 13 && gtin_valid(digits);
            if issuer_allows(digits) && luhn_valid(digits) && !barcode {
                best = Some((last, Kind::Card));
            }
        }
    }
    best
}

/// Whether a card issuer uses this prefix with this length (ISO/IEC 7812 ranges of
/// the networks in use).
fn issuer_allows(d: &[u8]) -> bool {
    let n = d.len();
    let prefix = |k: usize| d[..k].iter().fold(0u32, |acc, &x| acc * 10 + u32::from(x));
    let (p1, p2, p3, p4) = (prefix(1), prefix(2), prefix(3), prefix(4));
    match p1 {
        4 => matches!(n, 13 | 16 | 19),
        3 => {
            (matches!(p2, 34 | 37) && n == 15)
                || ((3528..=3589).contains(&p4) && (16..=19).contains(&n))
                || ((matches!(p2, 36 | 38 | 39) || (300..=305).contains(&p3))
                    && (14..=19).contains(&n))
        }
        5 => {
            ((51..=55).contains(&p2) && n == 16)
                || ((p2 == 50 || (56..=59).contains(&p2)) && (13..=19).contains(&n))
        }
        2 => {
            ((2221..=2720).contains(&p4) && n == 16)
                || ((2200..=2204).contains(&p4) && (16..=19).contains(&n))
        }
        6 => (13..=19).contains(&n),
        _ => false,
    }
}

pub(crate) fn luhn_valid(d: &[u8]) -> bool {
    let sum: u32 = d
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &x)| {
            let x = u32::from(x);
            if i % 2 == 1 {
                let y = x * 2;
                if y > 9 { y - 9 } else { y }
            } else {
                x
            }
        })
        .sum();
    sum.is_multiple_of(10)
}

/// GTIN/EAN-13 check digit (weights 1 and 3 from the left).
fn gtin_valid(d: &[u8]) -> bool {
    let sum: u32 = d[..12]
        .iter()
        .enumerate()
        .map(|(i, &x)| u32::from(x) * if i % 2 == 0 { 1 } else { 3 })
        .sum();
    (10 - sum % 10) % 10 == u32::from(d[12])
}

/// A phone number starting at group `first`: the index of its last group.
fn phone_at(bytes: &[u8], run: &Run, first: usize) -> Option<(usize, Kind)> {
    let group = run.groups[first];
    // Inside a run, a number starts after a space (`Order 4711 0170 5550123`), not
    // after a dash or dot (`ISBN 978-3-05-123456-7`, `RE-2026-0123456789`).
    if first > 0 && !group.plus && !group.spaced {
        return None;
    }
    let digits = &bytes[group.start..group.end];
    let d0 = digits[0];
    let d1 = digits.get(1).copied();
    let d2 = digits.get(2).copied();
    // (min, max) digits, counting the `00` or trunk `0`.
    let range = if group.plus {
        (d0 != b'0').then_some((8, 15))
    } else if d0 == b'0' && d1 == Some(b'0') {
        d2.filter(|d| (b'1'..=b'9').contains(d)).map(|_| (11, 17))
    } else if d0 == b'0' && d1.is_some_and(|d| d != b'0') {
        (!date_at(bytes, run, first)).then_some((9, 12))
    } else {
        None
    };
    if let Some((min, max)) = range {
        let mut total = 0;
        let mut best = None;
        for last in first..run.n {
            total += run.groups[last].digits();
            if total > max {
                break;
            }
            if total >= min {
                best = Some(last);
            }
        }
        return best.map(|last| (last, Kind::Phone));
    }
    north_american(bytes, run, first).map(|last| (last, Kind::Phone))
}

/// `(555) 123-4567`, `555-123-4567`, `555.123.4567`, `1-800-555-0199`: groups of 3,
/// 3 and 4 digits (after an optional `1`), the area code not starting with 0 or 1.
fn north_american(bytes: &[u8], run: &Run, first: usize) -> Option<usize> {
    let lens = |from: usize, want: &[usize]| {
        from + want.len() <= run.n
            && want
                .iter()
                .enumerate()
                .all(|(k, &len)| run.groups[from + k].digits() == len)
    };
    // Neither the area code nor the exchange starts with 0 or 1.
    let area_ok =
        |g: usize| bytes[run.groups[g].start] >= b'2' && bytes[run.groups[g + 1].start] >= b'2';
    if lens(first, &[3, 3, 4]) && area_ok(first) {
        return Some(first + 2);
    }
    let one = &bytes[run.groups[first].start..run.groups[first].end] == b"1";
    if one && lens(first, &[1, 3, 3, 4]) && area_ok(first + 1) {
        return Some(first + 3);
    }
    None
}

/// Whether groups from `first` read as a date: day and month of one or two digits and
/// a year of two or four, joined by the same `.`, `/` or `-` (and not continuing with
/// that separator, as French phone numbers in pairs do: `01.23.45.67.89`).
fn date_at(bytes: &[u8], run: &Run, first: usize) -> bool {
    if first + 3 > run.n {
        return false;
    }
    let g = &run.groups[first..first + 3];
    let value = |g: Group| {
        bytes[g.start..g.end]
            .iter()
            .fold(0u32, |acc, &b| acc * 10 + u32::from(b - b'0'))
    };
    let sep = g[1].sep;
    let shaped = matches!(sep, Sep::Dot | Sep::Slash | Sep::Dash)
        && g[2].sep == sep
        && (1..=2).contains(&g[0].digits())
        && (1..=2).contains(&g[1].digits())
        && matches!(g[2].digits(), 2 | 4);
    let plausible = (1..=31).contains(&value(g[0])) && (1..=31).contains(&value(g[1]));
    let continues = first + 3 < run.n && run.groups[first + 3].sep == sep;
    shaped && plausible && !continues
}

// ---------------------------------------------------------------------------------
// Identifiers in path segments

/// Whether a whole path segment is an identifier: at least `min_digits` digits, a
/// UUID, or a hex token of 24 or more characters with digits and letters (object
/// ids, session tokens).
pub fn is_id_segment(segment: &str, min_digits: usize) -> bool {
    let b = segment.as_bytes();
    if b.len() >= min_digits && b.iter().all(u8::is_ascii_digit) {
        return true;
    }
    let uuid = b.len() == 36
        && b.iter().enumerate().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => *c == b'-',
            _ => c.is_ascii_hexdigit(),
        });
    let hex = b.len() >= 24
        && b.iter().all(u8::is_ascii_hexdigit)
        && b.iter().any(u8::is_ascii_digit)
        && b.iter().any(u8::is_ascii_alphabetic);
    uuid || hex
}
