//! Camera groups and the scope of a head, with no I/O.
//!
//! A head (a small classifier over the model's embedding) is either global or belongs to a named
//! group of cameras, so that cameras that see the same scene (a parking lot, a loading dock)
//! learn together without their labels bending the head of every other camera. The
//! configuration lists the groups, each with camera-id patterns:
//!
//! ```toml
//! [[groups]]
//! name = "lot"
//! cameras = ["lot-*", "gate-?"]
//! ```
//!
//! A camera belongs to the first group (in configuration order) with a matching pattern, else
//! to [`GLOBAL_SCOPE`]. Patterns are globs (see [`matches`]): `*` is any run of characters,
//! `?` exactly one, everything else is literal.

use serde::{Deserialize, Serialize};

/// The scope of the cameras of no group, and of the head they share.
pub const GLOBAL_SCOPE: &str = "global";

/// Longest scope (group) name, in bytes: names become metric labels and file names.
pub const MAX_SCOPE_NAME_BYTES: usize = 64;

/// Longest camera pattern, in bytes: patterns are matched per frame, so they stay short.
pub const MAX_PATTERN_BYTES: usize = 256;

/// One camera group of the configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CameraGroup {
    /// The group's name: the scope of its cameras and their head.
    pub name: String,
    /// Camera-id patterns (`*` any run, `?` one character); a camera matching any is in the
    /// group.
    pub cameras: Vec<String>,
}

/// Why a group (or a scope name) was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ScopeError {
    /// A name is empty.
    #[error("scope name is empty; expected 1 to {MAX_SCOPE_NAME_BYTES} of [A-Za-z0-9._-]")]
    EmptyName,
    /// A name is longer than [`MAX_SCOPE_NAME_BYTES`].
    #[error(
        "scope name {name:?} is {len} bytes long; expected at most {MAX_SCOPE_NAME_BYTES} bytes"
    )]
    NameTooLong {
        /// The name as given.
        name: String,
        /// Its length in bytes.
        len: usize,
    },
    /// A name holds a character outside `[A-Za-z0-9._-]`.
    #[error("scope name {name:?} contains {character:?}; expected only [A-Za-z0-9._-]")]
    NameCharacter {
        /// The name as given.
        name: String,
        /// The first character refused.
        character: char,
    },
    /// A group is named [`GLOBAL_SCOPE`], the scope of the cameras of no group.
    #[error("group name {GLOBAL_SCOPE:?} is reserved for cameras of no group; choose another")]
    ReservedName,
    /// Two groups have the same name.
    #[error("group {0:?} is configured twice; expected unique group names")]
    DuplicateName(String),
    /// A group has no camera pattern.
    #[error("group {0:?} has no camera pattern; expected at least one in `cameras`")]
    NoPatterns(String),
    /// A pattern is empty.
    #[error("group {0:?} has an empty camera pattern; expected e.g. \"lot-*\"")]
    EmptyPattern(String),
    /// A pattern is longer than [`MAX_PATTERN_BYTES`].
    #[error(
        "group {group:?} has a camera pattern of {len} bytes; expected at most {MAX_PATTERN_BYTES} bytes"
    )]
    PatternTooLong {
        /// The group's name.
        group: String,
        /// The pattern's length in bytes.
        len: usize,
    },
    /// A pattern holds a control character (a newline, tab, escape, ...).
    #[error(
        "group {group:?} has camera pattern {pattern:?} with a control character; expected printable text"
    )]
    PatternControlCharacter {
        /// The group's name.
        group: String,
        /// The pattern as given.
        pattern: String,
    },
}

/// Checks a scope name from outside (a head file, an HTTP request body): non-empty, at most
/// [`MAX_SCOPE_NAME_BYTES`] bytes, only `[A-Za-z0-9._-]`. [`GLOBAL_SCOPE`] is accepted; whether
/// the scope is configured is [`Scopes::is_known`]'s question.
pub fn validate_scope_name(name: &str) -> Result<(), ScopeError> {
    if name.is_empty() {
        return Err(ScopeError::EmptyName);
    }
    if name.len() > MAX_SCOPE_NAME_BYTES {
        return Err(ScopeError::NameTooLong {
            name: name.to_owned(),
            len: name.len(),
        });
    }
    if let Some(character) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(ScopeError::NameCharacter {
            name: name.to_owned(),
            character,
        });
    }
    Ok(())
}

/// A validated group, its patterns split into characters once rather than per camera.
#[derive(Debug, Clone)]
struct Group {
    name: String,
    patterns: Vec<Vec<char>>,
}

/// The configured camera groups: which scope (and so which head) a camera belongs to.
#[derive(Debug, Clone, Default)]
pub struct Scopes {
    groups: Vec<Group>,
}

impl Scopes {
    /// Validates the groups: each name non-empty, at most [`MAX_SCOPE_NAME_BYTES`] bytes, only
    /// `[A-Za-z0-9._-]`, not [`GLOBAL_SCOPE`], unique; at least one pattern per group; each
    /// pattern non-empty, at most [`MAX_PATTERN_BYTES`] bytes, with no control characters.
    pub fn new(groups: &[CameraGroup]) -> Result<Self, ScopeError> {
        let mut checked: Vec<Group> = Vec::with_capacity(groups.len());
        for group in groups {
            validate_scope_name(&group.name)?;
            if group.name == GLOBAL_SCOPE {
                return Err(ScopeError::ReservedName);
            }
            if checked.iter().any(|g| g.name == group.name) {
                return Err(ScopeError::DuplicateName(group.name.clone()));
            }
            if group.cameras.is_empty() {
                return Err(ScopeError::NoPatterns(group.name.clone()));
            }
            let mut patterns = Vec::with_capacity(group.cameras.len());
            for pattern in &group.cameras {
                validate_pattern(&group.name, pattern)?;
                patterns.push(pattern.chars().collect());
            }
            checked.push(Group {
                name: group.name.clone(),
                patterns,
            });
        }
        Ok(Self { groups: checked })
    }

    /// The scope of a camera: the name of the first group (in configuration order) with a
    /// matching pattern, else [`GLOBAL_SCOPE`].
    pub fn scope_of(&self, camera: &str) -> &str {
        self.groups
            .iter()
            .find(|g| g.patterns.iter().any(|p| glob(p, camera)))
            .map_or(GLOBAL_SCOPE, |g| g.name.as_str())
    }

    /// Group names in configuration order (without [`GLOBAL_SCOPE`]).
    pub fn groups(&self) -> impl Iterator<Item = &str> {
        self.groups.iter().map(|g| g.name.as_str())
    }

    /// Whether `scope` is [`GLOBAL_SCOPE`] or a configured group.
    pub fn is_known(&self, scope: &str) -> bool {
        scope == GLOBAL_SCOPE || self.groups.iter().any(|g| g.name == scope)
    }
}

fn validate_pattern(group: &str, pattern: &str) -> Result<(), ScopeError> {
    if pattern.is_empty() {
        return Err(ScopeError::EmptyPattern(group.to_owned()));
    }
    if pattern.len() > MAX_PATTERN_BYTES {
        return Err(ScopeError::PatternTooLong {
            group: group.to_owned(),
            len: pattern.len(),
        });
    }
    if pattern.chars().any(char::is_control) {
        return Err(ScopeError::PatternControlCharacter {
            group: group.to_owned(),
            pattern: pattern.to_owned(),
        });
    }
    Ok(())
}

/// Glob match over characters (not bytes, so `?` is one character of a unicode camera id):
/// `*` matches any run of characters (also none), `?` exactly one, everything else itself.
/// Iterative, backtracking only to the last `*`: at most `pattern x text` steps, no recursion,
/// whatever the pattern.
pub fn matches(pattern: &str, text: &str) -> bool {
    let pattern: Vec<char> = pattern.chars().collect();
    glob(&pattern, text)
}

/// [`matches`] with the pattern already split into characters; `t` walks `text` by byte offset
/// (always at a character boundary).
fn glob(pattern: &[char], text: &str) -> bool {
    let next_char = |at: usize| text.get(at..).and_then(|rest| rest.chars().next());
    let (mut p, mut t) = (0usize, 0usize);
    // After a `*`: the pattern index just past it, and the text offset it currently stops at.
    let mut star: Option<(usize, usize)> = None;
    while let Some(c) = next_char(t) {
        match pattern.get(p) {
            Some('*') => {
                star = Some((p + 1, t));
                p += 1;
                continue;
            }
            Some(&want) if want == '?' || want == c => {
                p += 1;
                t += c.len_utf8();
                continue;
            }
            _ => {}
        }
        // Mismatch: let the last `*` swallow one more character and retry from there.
        let Some((after_star, stop)) = star else {
            return false;
        };
        let Some(swallowed) = next_char(stop) else {
            return false;
        };
        let stop = stop + swallowed.len_utf8();
        star = Some((after_star, stop));
        p = after_star;
        t = stop;
    }
    pattern
        .get(p..)
        .is_some_and(|rest| rest.iter().all(|&c| c == '*'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    fn group(name: &str, cameras: &[&str]) -> CameraGroup {
        CameraGroup {
            name: name.into(),
            cameras: cameras.iter().map(|c| c.to_string()).collect(),
        }
    }

    #[test]
    fn the_first_matching_group_wins() -> TestResult {
        let scopes = Scopes::new(&[
            group("gates", &["gate-?", "exit"]),
            group("lot", &["lot-*", "gate-*"]),
        ])?;
        assert_eq!(scopes.scope_of("gate-1"), "gates");
        assert_eq!(scopes.scope_of("exit"), "gates");
        // `gate-12` is not `gate-?`, so it falls to the second group's `gate-*`.
        assert_eq!(scopes.scope_of("gate-12"), "lot");
        assert_eq!(scopes.scope_of("lot-"), "lot");
        assert_eq!(scopes.scope_of("lot-north-3"), "lot");
        Ok(())
    }

    #[test]
    fn a_camera_of_no_group_is_global() -> TestResult {
        let scopes = Scopes::new(&[group("lot", &["lot-*"])])?;
        assert_eq!(scopes.scope_of("dock-1"), GLOBAL_SCOPE);
        assert_eq!(scopes.scope_of(""), GLOBAL_SCOPE);
        assert_eq!(scopes.scope_of("LOT-1"), GLOBAL_SCOPE, "case-sensitive");
        assert_eq!(Scopes::default().scope_of("lot-1"), GLOBAL_SCOPE);
        assert_eq!(Scopes::new(&[])?.scope_of("lot-1"), GLOBAL_SCOPE);
        Ok(())
    }

    #[test]
    fn groups_and_known_scopes() -> TestResult {
        let scopes = Scopes::new(&[group("lot", &["lot-*"]), group("dock.2", &["d*"])])?;
        assert_eq!(scopes.groups().collect::<Vec<_>>(), ["lot", "dock.2"]);
        assert!(scopes.is_known(GLOBAL_SCOPE));
        assert!(scopes.is_known("lot"));
        assert!(scopes.is_known("dock.2"));
        assert!(!scopes.is_known("dock"));
        assert!(!scopes.is_known(""));
        assert_eq!(Scopes::default().groups().count(), 0);
        Ok(())
    }

    #[test]
    fn star_and_question_mark() {
        assert!(matches("*", ""));
        assert!(matches("*", "anything"));
        assert!(matches("**", "x"));
        assert!(matches("a*", "a"));
        assert!(matches("a*b", "ab"));
        assert!(matches("a*b", "axxxb"));
        assert!(matches("a*b", "abab"));
        assert!(!matches("a*b", "abba-"));
        assert!(matches("*-cam-*", "north-cam-7"));
        assert!(!matches("*-cam-*", "north-cam7"));
        assert!(matches("?", "x"));
        assert!(!matches("?", ""));
        assert!(!matches("?", "xy"));
        assert!(matches("cam-??", "cam-12"));
        assert!(!matches("cam-??", "cam-1"));
        assert!(matches("?*", "x"));
        assert!(!matches("?*", ""));
        assert!(!matches("", "x"));
        assert!(matches("", ""));
        // Everything else is literal, regex and path characters included.
        assert!(matches("a.b", "a.b"));
        assert!(!matches("a.b", "axb"));
        assert!(matches("[ab]", "[ab]"));
        assert!(!matches("[ab]", "a"));
        assert!(matches("a/*", "a/b/c"));
    }

    #[test]
    fn unicode_camera_ids_match_by_character() -> TestResult {
        assert!(matches("caméra-?", "caméra-é"));
        assert!(matches("?", "é"));
        assert!(matches("?", "猫"));
        assert!(!matches("??", "é"), "one character, two bytes");
        assert!(matches("*猫*", "屋根の猫カメラ"));
        assert!(matches("*-?", "Überwachung-ß"));
        let scopes = Scopes::new(&[group("küche", &["küche-*"])]);
        assert!(matches!(
            scopes,
            Err(ScopeError::NameCharacter {
                character: 'ü', ..
            })
        ));
        let scopes = Scopes::new(&[group("kitchen", &["küche-*", "猫?"])])?;
        assert_eq!(scopes.scope_of("küche-1"), "kitchen");
        assert_eq!(scopes.scope_of("猫猫"), "kitchen");
        assert_eq!(scopes.scope_of("kuche-1"), GLOBAL_SCOPE);
        Ok(())
    }

    #[test]
    fn a_pathological_pattern_stays_fast() {
        let text = "a".repeat(4_000);
        let pattern = format!("{}b", "*a".repeat(100));
        assert!(!matches(&pattern, &text));
        assert!(matches(&pattern, &format!("{text}b")));
    }

    #[test]
    fn group_names_are_validated() {
        let err = |name: &str| Scopes::new(&[group(name, &["x"])]).err();
        assert_eq!(err(""), Some(ScopeError::EmptyName));
        assert_eq!(err(GLOBAL_SCOPE), Some(ScopeError::ReservedName));
        assert_eq!(
            err("lot 1"),
            Some(ScopeError::NameCharacter {
                name: "lot 1".into(),
                character: ' '
            })
        );
        assert!(matches!(
            err("a/b"),
            Some(ScopeError::NameCharacter { character: '/', .. })
        ));
        let long = "a".repeat(MAX_SCOPE_NAME_BYTES + 1);
        assert_eq!(
            err(&long),
            Some(ScopeError::NameTooLong {
                name: long.clone(),
                len: MAX_SCOPE_NAME_BYTES + 1
            })
        );
        assert_eq!(err(&"a".repeat(MAX_SCOPE_NAME_BYTES)), None);
        assert_eq!(err("Lot_1.north-2"), None);
        assert_eq!(
            Scopes::new(&[group("lot", &["a"]), group("lot", &["b"])]).err(),
            Some(ScopeError::DuplicateName("lot".into()))
        );
    }

    #[test]
    fn patterns_are_validated() {
        let err = |cameras: &[&str]| Scopes::new(&[group("lot", cameras)]).err();
        assert_eq!(err(&[]), Some(ScopeError::NoPatterns("lot".into())));
        assert_eq!(
            err(&["lot-*", ""]),
            Some(ScopeError::EmptyPattern("lot".into()))
        );
        assert_eq!(
            err(&["lot\n*"]),
            Some(ScopeError::PatternControlCharacter {
                group: "lot".into(),
                pattern: "lot\n*".into()
            })
        );
        let long = "*".repeat(MAX_PATTERN_BYTES + 1);
        assert_eq!(
            err(&[&long]),
            Some(ScopeError::PatternTooLong {
                group: "lot".into(),
                len: MAX_PATTERN_BYTES + 1
            })
        );
        assert_eq!(err(&[&"*".repeat(MAX_PATTERN_BYTES)]), None);
    }

    #[test]
    fn messages_name_the_group_and_pattern() {
        let message = |groups: &[CameraGroup]| {
            Scopes::new(groups)
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default()
        };
        let m = message(&[group("lot", &["ok", "bad\tpattern"])]);
        assert!(m.contains("\"lot\"") && m.contains("bad\\tpattern"), "{m}");
        let m = message(&[group("lot 1", &["x"])]);
        assert!(m.contains("\"lot 1\"") && m.contains("' '"), "{m}");
        let m = message(&[group("global", &["x"])]);
        assert!(m.contains("reserved"), "{m}");
        let m = message(&[group("dock", &[])]);
        assert!(m.contains("\"dock\"") && m.contains("`cameras`"), "{m}");
    }

    #[test]
    fn validate_scope_name_accepts_global() {
        assert_eq!(validate_scope_name(GLOBAL_SCOPE), Ok(()));
        assert_eq!(validate_scope_name("lot-1"), Ok(()));
        assert_eq!(validate_scope_name(""), Err(ScopeError::EmptyName));
        assert!(validate_scope_name("../etc").is_err());
        assert!(validate_scope_name("lot\n").is_err());
    }

    #[test]
    fn groups_deserialize_from_config() -> TestResult {
        let groups: Vec<CameraGroup> =
            serde_json::from_str(r#"[{"name": "lot", "cameras": ["lot-*", "gate-?"]}]"#)?;
        assert_eq!(groups, [group("lot", &["lot-*", "gate-?"])]);
        let unknown = serde_json::from_str::<CameraGroup>(
            r#"{"name": "lot", "cameras": ["x"], "camera": "y"}"#,
        );
        assert!(unknown.is_err());
        Ok(())
    }

    /// The textbook recursive definition, for small inputs only.
    fn reference(pattern: &[char], text: &[char]) -> bool {
        match (pattern.split_first(), text.split_first()) {
            (None, _) => text.is_empty(),
            (Some(('*', rest)), _) => {
                reference(rest, text) || (!text.is_empty() && reference(pattern, &text[1..]))
            }
            (Some(_), None) => false,
            (Some((&p, p_rest)), Some((&t, t_rest))) => {
                (p == '?' || p == t) && reference(p_rest, t_rest)
            }
        }
    }

    proptest! {
        #[test]
        fn matches_agrees_with_the_reference(
            pattern in "[ab*?]{0,8}",
            text in "[ab*?]{0,10}",
        ) {
            let p: Vec<char> = pattern.chars().collect();
            let t: Vec<char> = text.chars().collect();
            prop_assert_eq!(matches(&pattern, &text), reference(&p, &t));
        }

        #[test]
        fn a_literal_pattern_matches_exactly_itself(
            pattern in "[a-cé.猫-]{0,10}",
            text in "[a-cé.猫-]{0,10}",
        ) {
            prop_assert!(matches(&pattern, &pattern));
            prop_assert_eq!(matches(&pattern, &text), pattern == text);
        }
    }
}
