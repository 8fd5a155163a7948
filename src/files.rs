//! Bounded reads of the files configuration points at: the config file, secrets (`*_FILE`,
//! token files), certificates and keys, request bodies, expectations. A path that names
//! `/dev/zero`, `/dev/urandom` or a multi-gigabyte file is a clear error, never a process that
//! reads until it runs out of memory. Also the process's open-files limit ([`nofile_limit`]).

use std::io::{self, Read};
use std::path::Path;

/// The largest file the agent reads for its configuration (1 MiB): far above any real config,
/// certificate bundle or token.
pub(crate) const MAX_FILE_BYTES: u64 = 1024 * 1024;

/// Reads at most [`MAX_FILE_BYTES`]; a longer file is an error saying so.
pub(crate) fn read(path: &Path) -> io::Result<Vec<u8>> {
    read_at_most(path, MAX_FILE_BYTES)
}

/// [`read`], as UTF-8.
pub(crate) fn read_to_string(path: &Path) -> io::Result<String> {
    String::from_utf8(read(path)?)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "the file is not UTF-8 text"))
}

fn read_at_most(path: &Path, max: u64) -> io::Result<Vec<u8>> {
    let mut out = Vec::new();
    std::fs::File::open(path)?
        .take(max + 1)
        .read_to_end(&mut out)?;
    if out.len() as u64 > max {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("larger than {max} bytes; is this the right file?"),
        ));
    }
    Ok(out)
}

/// The soft open-files limit of this process, from `/proc/self/limits` (no `unsafe` needed).
pub(crate) fn nofile_limit() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/self/limits").ok()?;
    parse_nofile(&text)
}

fn parse_nofile(limits: &str) -> Option<u64> {
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line["Max open files".len()..]
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endless_and_oversized_files_are_errors() {
        let e = read_at_most(Path::new("/dev/zero"), 4096).unwrap_err();
        assert!(e.to_string().contains("larger than 4096 bytes"), "{e}");
        let e = read(Path::new("/dev/zero")).unwrap_err();
        assert!(e.to_string().contains("larger than 1048576 bytes"), "{e}");
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::write(&p, vec![b'a'; 4096]).unwrap();
        assert_eq!(read_at_most(&p, 4096).unwrap().len(), 4096);
        assert!(read_at_most(&p, 4095).is_err());
        std::fs::write(&p, [0xff, 0xfe]).unwrap();
        assert!(
            read_to_string(&p)
                .unwrap_err()
                .to_string()
                .contains("not UTF-8")
        );
    }

    #[test]
    fn reads_the_soft_open_files_limit() {
        let text = "Limit                     Soft Limit           Hard Limit           Units     \nMax cpu time              unlimited            unlimited            seconds   \nMax open files            1024                 524288               files     \n";
        assert_eq!(parse_nofile(text), Some(1024));
        assert_eq!(parse_nofile("nothing"), None);
        assert!(nofile_limit().is_some_and(|n| n > 0));
    }
}
