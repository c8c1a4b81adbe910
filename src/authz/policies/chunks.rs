//! Cuts a policy file into pieces of whole policies, so that Cedar's parser holds the syntax
//! tree of one piece at a time: over a whole file of 10,000 policies that tree peaked at
//! ~140 MB, which the allocator then kept resident after it was freed.

/// About how many bytes of policy text are parsed at once.
const CHUNK_BYTES: usize = 32 * 1024;

/// `(offset, piece)` of `text`, each piece ending after a policy's closing `;` (the last one
/// also holds whatever follows), and about [`CHUNK_BYTES`] long. A `;` in a string literal or a
/// `//` comment does not end a policy. If the text ends inside a string literal, it is one
/// piece, so that the parser reports the error on the whole text.
pub fn chunks(text: &str) -> Vec<(usize, &str)> {
    #[derive(Clone, Copy, PartialEq)]
    enum At {
        Code,
        Str,
        Escape,
        Comment,
    }
    let mut at = At::Code;
    let mut out = Vec::new();
    let mut start = 0;
    let mut prev = 0u8;
    for (i, b) in text.bytes().enumerate() {
        at = match (at, b) {
            (At::Code, b'"') => At::Str,
            (At::Code, b'/') if prev == b'/' => At::Comment,
            (At::Code, b';') if i + 1 - start >= CHUNK_BYTES => {
                out.push((start, text.get(start..=i).unwrap_or_default()));
                start = i + 1;
                At::Code
            }
            (At::Str, b'\\') => At::Escape,
            (At::Str, b'"') => At::Code,
            (At::Escape, _) => At::Str,
            (At::Comment, b'\n') => At::Code,
            (at, _) => at,
        };
        // A `/` that opened a comment is not the first half of another `//`.
        prev = if at == At::Code { b } else { 0 };
    }
    if at == At::Str || at == At::Escape {
        return vec![(0, text)];
    }
    match out.last_mut() {
        Some((last, piece)) if start >= text.len() || text[start..].trim().is_empty() => {
            *piece = text.get(*last..).unwrap_or_default();
        }
        _ => out.push((start, text.get(start..).unwrap_or_default())),
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(i: usize) -> String {
        format!(
            "@id(\"p{i}\") // a comment; with \"quotes\n permit (principal, action, resource) when {{ context.s == \"a;\\\"b;\" }};\n"
        )
    }

    #[test]
    fn pieces_rejoin_to_the_text_and_end_at_policies() {
        let text: String = (0..2000).map(policy).collect::<String>() + "// trailing\n";
        let pieces = chunks(&text);
        assert!(pieces.len() > 1);
        let mut joined = String::new();
        for (offset, piece) in &pieces {
            assert_eq!(*offset, joined.len());
            joined.push_str(piece);
            let n = piece.matches("@id(").count();
            assert_eq!(n, piece.matches("};").count());
        }
        assert_eq!(joined, text);
    }

    #[test]
    fn small_or_unterminated_text_is_one_piece() {
        assert_eq!(
            chunks("permit (principal, action, resource);"),
            vec![(0, "permit (principal, action, resource);")]
        );
        let open = (0..2000).map(policy).collect::<String>()
            + "forbid (principal, action, resource) when { \"x };";
        assert_eq!(chunks(&open).len(), 1);
        assert_eq!(chunks(""), vec![(0, "")]);
    }
}
