//! Statements over a list of values with few distinct texts: a list is padded to one of
//! [`SIZES`] by repeating its last value, so a statement is prepared (and planned) once per
//! size rather than once per length. Used where repeating a value changes nothing (`IN`
//! lists, `VALUES` lists whose rows are matched, not inserted).

/// The list lengths statements are written for.
const SIZES: [usize; 6] = [1, 4, 16, 64, 256, 1024];

/// The most values one padded list holds; longer lists go in chunks of this size.
pub(crate) const MAX_LIST: usize = SIZES[SIZES.len() - 1];

/// The length `len` values are padded to (`len` itself if it exceeds [`MAX_LIST`]).
pub(crate) fn padded_len(len: usize) -> usize {
    SIZES.into_iter().find(|&size| size >= len).unwrap_or(len)
}

/// `values` padded to [`padded_len`] by repeating the last one (empty stays empty).
pub(crate) fn padded<T>(values: &[T]) -> impl Iterator<Item = &T> {
    let extra = padded_len(values.len()) - values.len();
    values
        .iter()
        .chain(values.last().into_iter().cycle().take(extra))
}

/// `$first, $first+1, …` for `count` placeholders.
pub(crate) fn placeholders(first: usize, count: usize) -> String {
    (first..first + count)
        .map(|n| format!("${n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `($first), ($first+1), …`: `count` rows of one value.
pub(crate) fn row_placeholders(first: usize, count: usize) -> String {
    (first..first + count)
        .map(|n| format!("(${n})"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `($first, $first+1), ($first+2, $first+3), …` for `count` pairs.
pub(crate) fn pair_placeholders(first: usize, count: usize) -> String {
    (0..count)
        .map(|n| format!("(${}, ${})", first + 2 * n, first + 2 * n + 1))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_pad_to_few_sizes_with_their_last_value() {
        assert_eq!(padded_len(0), 1);
        assert_eq!(padded_len(1), 1);
        assert_eq!(padded_len(5), 16);
        assert_eq!(padded_len(1024), 1024);
        assert_eq!(padded_len(1025), 1025);
        assert_eq!(padded(&[1, 2]).copied().collect::<Vec<_>>(), [1, 2, 2, 2]);
        assert_eq!(padded::<i32>(&[]).count(), 0);
        assert_eq!(placeholders(2, 3), "$2, $3, $4");
        assert_eq!(pair_placeholders(1, 2), "($1, $2), ($3, $4)");
        assert_eq!(row_placeholders(3, 2), "($3), ($4)");
    }
}
