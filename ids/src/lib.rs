//! The identifiers both sides of symroute read from outside — the Lambda from CloudTrail events,
//! the agent from its command line and from IMDS — with one definition each, so that what one
//! side accepts the other does too, and the SSM document's `allowedPattern` says the same:
//!
//! - an EC2 id is its prefix (`eni-`, `i-`, `eni-attach-`) and 8 or 17 lowercase hex digits,
//!   the two lengths EC2 has issued;
//! - a MAC is six pairs of lowercase hex digits separated by colons, as IMDS and the kernel
//!   print it;
//! - hostile text is clipped before it is echoed in an error or a log line.
//!
//! Standard library only: the agent ships to every instance.

use std::fmt;

/// Hex digits after an EC2 id's prefix: the old ids have 8, the current ones 17.
pub const EC2_ID_HEX_LENGTHS: [usize; 2] = [8, 17];

fn is_lower_hex(s: &str) -> bool {
    s.bytes()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// `prefix` followed by 8 or 17 lowercase hex digits (`eni-0a9c4b60624c0e41d`).
pub fn is_ec2_id(value: &str, prefix: &str) -> bool {
    value
        .strip_prefix(prefix)
        .is_some_and(|hex| EC2_ID_HEX_LENGTHS.contains(&hex.len()) && is_lower_hex(hex))
}

/// Why a MAC did not parse.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MacError {
    /// The input, clipped.
    pub input: String,
}

impl fmt::Display for MacError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:?} is not a MAC address (want six pairs of lowercase hex digits, xx:xx:xx:xx:xx:xx)",
            self.input
        )
    }
}

impl std::error::Error for MacError {}

/// The six bytes of `0a:1b:2c:3d:4e:5f`.
pub fn parse_mac(s: &str) -> Result<[u8; 6], MacError> {
    let refuse = || MacError { input: clip(s, 64) };
    let mut out = [0u8; 6];
    let mut parts = s.split(':');
    for byte in &mut out {
        let part = parts.next().ok_or_else(refuse)?;
        if part.len() != 2 || !is_lower_hex(part) {
            return Err(refuse());
        }
        *byte = u8::from_str_radix(part, 16).map_err(|_| refuse())?;
    }
    match parts.next() {
        None => Ok(out),
        Some(_) => Err(refuse()),
    }
}

/// At most `max` bytes of `s` (cut at a character boundary), marked as cut with the length it
/// had, so a hostile value cannot blow up an error line, a log or an answer.
pub fn clip(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… ({} bytes)", &s[..end], s.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ec2_ids_have_their_prefix_and_8_or_17_lowercase_hex_digits() {
        for ok in [
            "eni-0a9c4b60",
            "eni-0a9c4b60624c0e41d",
            "i-0123456789abcdef0",
            "eni-attach-00eb752237a160808",
        ] {
            let prefix = ok.rsplit_once('-').map(|(p, _)| format!("{p}-")).unwrap();
            assert!(is_ec2_id(ok, &prefix), "{ok}");
        }
        for bad in [
            "eni-0A9C4B60624C0E41D",  // uppercase: EC2 never issues it
            "eni-0a9c4b6",            // 7
            "eni-0a9c4b606",          // 9
            "eni-0a9c4b60624c0e41d0", // 18
            "eni-0a9c4b60624c0e4g1",  // not hex
            "eni-",
            "ENI-0a9c4b60",
            "eni-0a9c4b60\n",
            "eni-0a9c4b60624c0e41d0a9c4b60624c0", // 32: the Lambda's old bound
        ] {
            assert!(!is_ec2_id(bad, "eni-"), "{bad:?}");
        }
        assert!(
            !is_ec2_id("eni-attach-00eb752237a160808", "eni-"),
            "an attachment is not an ENI"
        );
    }

    #[test]
    fn macs_are_six_lowercase_pairs() {
        assert_eq!(
            parse_mac("0a:1b:2c:3d:4e:5f"),
            Ok([0x0a, 0x1b, 0x2c, 0x3d, 0x4e, 0x5f])
        );
        for bad in [
            "0A:1B:2C:3D:4E:5F",
            "0a:1b:2c:3d:4e",
            "0a:1b:2c:3d:4e:5f:60",
            "0a-1b-2c-3d-4e-5f",
            "0a:1b:2c:3d:4e:5",
            "0a:1b:2c:3d:4e:5g",
            "",
            "0a:1b:2c:3d:4e:5f\n",
        ] {
            let e = parse_mac(bad).unwrap_err();
            assert!(e.to_string().contains("lowercase"), "{bad:?}: {e}");
        }
    }

    #[test]
    fn clip_keeps_short_text_and_cuts_long_text_at_a_char_boundary() {
        assert_eq!(clip("short", 64), "short");
        let long = "é".repeat(100);
        let cut = clip(&long, 7);
        assert_eq!(cut, format!("{}… (200 bytes)", "é".repeat(3)));
    }
}
