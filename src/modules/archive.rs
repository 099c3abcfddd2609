//! What an archive on the controller holds (tar, plain or gzip/bzip2/xz-compressed, and zip),
//! read before anything runs on a host, and the rules that keep its members inside the
//! directory it is unpacked in: no absolute member, no `..` component, no link whose target
//! leaves the directory, nothing but directories, regular files and symbolic links.

use std::io::Read;

/// How the archive is packed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// A tar, possibly compressed (the host's `tar -xf` recognises the compression).
    Tar,
    /// A zip (the host's `unzip`).
    Zip,
}

impl Format {
    /// Its name as the host script takes it.
    pub fn word(self) -> &'static str {
        match self {
            Format::Tar => "tar",
            Format::Zip => "zip",
        }
    }
}

/// What a member is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// A directory.
    Dir,
    /// A regular file with this sha256.
    File(String),
    /// A symbolic link to this target.
    Link(String),
}

/// One member: its path below the directory it is unpacked in, and what it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// The path, normalised (no leading `./`, no trailing `/`).
    pub path: String,
    /// What it is.
    pub kind: Kind,
}

/// The member path `name` normalised, `None` for the archive's root (`./`), or why it would
/// land outside the directory it is unpacked in.
pub fn member_path(name: &str) -> Result<Option<String>, String> {
    if name.starts_with('/') {
        return Err(format!("member `{name}` is an absolute path"));
    }
    let mut parts = Vec::new();
    for c in name.split('/') {
        match c {
            "" | "." => {}
            ".." => return Err(format!("member `{name}` has a `..` component")),
            c => parts.push(c),
        }
    }
    Ok((!parts.is_empty()).then(|| parts.join("/")))
}

/// Whether a link at member path `path` pointing to `target` stays inside the directory:
/// a relative target whose only `..` components come first, no more of them than the link
/// is deep. (A `..` after a name could climb out through another link.)
pub fn link_stays_inside(path: &str, target: &str) -> bool {
    if target.starts_with('/') || target.is_empty() {
        return false;
    }
    let depth = path.split('/').filter(|c| !c.is_empty()).count() - 1;
    let mut ups = 0;
    let mut named = false;
    for c in target.split('/') {
        match c {
            "" | "." => {}
            ".." if named => return false,
            ".." => ups += 1,
            _ => named = true,
        }
    }
    ups <= depth
}

/// Reads the members of an archive, in order, or says why it cannot be unpacked safely.
pub fn list(bytes: &[u8]) -> Result<(Format, Vec<Member>), String> {
    if bytes.starts_with(b"PK\x03\x04") || bytes.starts_with(b"PK\x05\x06") {
        return Ok((Format::Zip, zip_members(bytes)?));
    }
    let tar: Vec<u8> = if bytes.starts_with(&[0x1f, 0x8b]) {
        read_all(flate2::read::MultiGzDecoder::new(bytes), "gzip")?
    } else if bytes.starts_with(b"BZh") {
        read_all(bzip2::read::MultiBzDecoder::new(bytes), "bzip2")?
    } else if bytes.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0]) {
        let mut out = Vec::new();
        lzma_rs::xz_decompress(&mut std::io::BufReader::new(bytes), &mut out)
            .map_err(|e| format!("not a valid xz stream: {e}"))?;
        out
    } else if bytes.get(257..262) == Some(b"ustar") {
        bytes.to_vec()
    } else {
        return Err(
            "not an archive fleet can unpack (tar, tar.gz, tar.bz2, tar.xz or zip)".to_string(),
        );
    };
    Ok((Format::Tar, tar_members(&tar)?))
}

fn read_all(mut r: impl Read, what: &str) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    r.read_to_end(&mut out)
        .map_err(|e| format!("not a valid {what} stream: {e}"))?;
    Ok(out)
}

fn utf8(name: &[u8]) -> Result<&str, String> {
    std::str::from_utf8(name).map_err(|_| {
        format!(
            "member `{}` has a name that is not UTF-8",
            String::from_utf8_lossy(name)
        )
    })
}

fn push(out: &mut Vec<Member>, name: &str, kind: Kind) -> Result<(), String> {
    if name.contains('\0') {
        return Err(format!("member `{name}` has a NUL byte in its name"));
    }
    let Some(path) = member_path(name)? else {
        return Ok(());
    };
    if let Kind::Link(target) = &kind
        && !link_stays_inside(&path, target)
    {
        return Err(format!(
            "member `{name}` is a link to `{target}`, outside the directory it is unpacked in"
        ));
    }
    // A later member of the same path replaces an earlier one, as when unpacking.
    out.retain(|m| m.path != path);
    out.push(Member { path, kind });
    Ok(())
}

fn tar_members(tar: &[u8]) -> Result<Vec<Member>, String> {
    use tar::EntryType as T;
    let bad = |e: std::io::Error| format!("not a valid tar archive: {e}");
    let mut out = Vec::new();
    let mut archive = tar::Archive::new(tar);
    for entry in archive.entries().map_err(bad)? {
        let mut entry = entry.map_err(bad)?;
        let name = utf8(&entry.path_bytes())?.to_string();
        let kind = match entry.header().entry_type() {
            T::XGlobalHeader | T::XHeader | T::GNULongName | T::GNULongLink => continue,
            T::Directory => Kind::Dir,
            T::Regular | T::Continuous => {
                let mut data = Vec::new();
                entry.read_to_end(&mut data).map_err(bad)?;
                Kind::File(crate::util::sha256_hex(&data))
            }
            T::Symlink => {
                let target = entry
                    .link_name_bytes()
                    .map(|t| utf8(&t).map(str::to_string))
                    .transpose()?
                    .unwrap_or_default();
                Kind::Link(target)
            }
            other => {
                return Err(format!(
                    "member `{name}` is a {} (fleet unpacks directories, regular files and symbolic links only)",
                    kind_name(other)
                ));
            }
        };
        push(&mut out, &name, kind)?;
    }
    Ok(out)
}

fn kind_name(t: tar::EntryType) -> &'static str {
    use tar::EntryType as T;
    match t {
        T::Link => "hard link",
        T::Char => "character device",
        T::Block => "block device",
        T::Fifo => "FIFO",
        _ => "special entry",
    }
}

fn zip_members(bytes: &[u8]) -> Result<Vec<Member>, String> {
    let bad = |e: zip::result::ZipError| format!("not a valid zip archive: {e}");
    let mut z = zip::ZipArchive::new(std::io::Cursor::new(bytes)).map_err(bad)?;
    let mut out = Vec::new();
    for i in 0..z.len() {
        let mut f = z.by_index(i).map_err(bad)?;
        let name = utf8(f.name_raw())?.to_string();
        let kind = if f.is_dir() {
            Kind::Dir
        } else {
            let mut data = Vec::new();
            f.read_to_end(&mut data)
                .map_err(|e| format!("member `{name}` cannot be read: {e}"))?;
            if f.is_symlink() {
                Kind::Link(utf8(&data)?.to_string())
            } else {
                Kind::File(crate::util::sha256_hex(&data))
            }
        };
        push(&mut out, &name, kind)?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn member_paths_stay_inside() {
        assert_eq!(member_path("./a/b/").expect("ok"), Some("a/b".to_string()));
        assert_eq!(member_path("./").expect("ok"), None);
        assert!(
            member_path("/etc/passwd")
                .expect_err("an error")
                .contains("absolute")
        );
        assert!(
            member_path("a/../../x")
                .expect_err("an error")
                .contains("`..`")
        );
        assert!(member_path("..").is_err());
        assert_eq!(
            member_path("a..b/c").expect("ok"),
            Some("a..b/c".to_string())
        );
    }

    #[test]
    fn links_stay_inside() {
        assert!(link_stays_inside("lib/libx.so", "libx.so.1"));
        assert!(link_stays_inside("bin/tool", "../lib/tool"));
        assert!(link_stays_inside("a/b/c", "../../x"));
        assert!(!link_stays_inside("a/b/c", "../../../x"));
        assert!(!link_stays_inside("top", "../x"));
        assert!(!link_stays_inside("a/l", "/etc"));
        assert!(!link_stays_inside("a/l", "x/../../y"), "`..` after a name");
        assert!(!link_stays_inside("a/l", ""));
    }

    fn tar_of(entries: &[(&str, tar::EntryType, &[u8], Option<&str>)]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (name, t, data, link) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(*t);
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            // set_path refuses `..`; an attacker's archive does not.
            let field = &mut h.as_old_mut().name;
            field[..name.len()].copy_from_slice(name.as_bytes());
            if let Some(l) = link {
                h.set_link_name(l).expect("link");
            }
            h.set_cksum();
            b.append(&h, *data).expect("append");
        }
        b.into_inner().expect("tar")
    }

    #[test]
    fn tar_members_compressed_or_not() {
        use std::io::Write;
        let t = tar_of(&[
            ("app/", tar::EntryType::Directory, b"", None),
            ("app/run", tar::EntryType::Regular, b"hi\n", None),
            ("app/cur", tar::EntryType::Symlink, b"", Some("run")),
        ]);
        let want = vec![
            Member {
                path: "app".into(),
                kind: Kind::Dir,
            },
            Member {
                path: "app/run".into(),
                kind: Kind::File(crate::util::sha256_hex(b"hi\n")),
            },
            Member {
                path: "app/cur".into(),
                kind: Kind::Link("run".into()),
            },
        ];
        assert_eq!(list(&t).expect("ok"), (Format::Tar, want.clone()));
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&t).expect("ok");
        assert_eq!(list(&gz.finish().expect("ok")).expect("ok").1, want);
        let mut bz = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::fast());
        bz.write_all(&t).expect("ok");
        assert_eq!(list(&bz.finish().expect("ok")).expect("ok").1, want);
        let mut xz = Vec::new();
        lzma_rs::xz_compress(&mut &t[..], &mut xz).expect("ok");
        assert_eq!(list(&xz).expect("ok").1, want);
        assert!(
            list(b"plain text")
                .expect_err("an error")
                .contains("not an archive")
        );
    }

    #[test]
    fn escaping_tar_members_are_refused() {
        let slip = tar_of(&[("../evil", tar::EntryType::Regular, b"x", None)]);
        assert!(
            list(&slip)
                .expect_err("an error")
                .contains("member `../evil` has a `..`")
        );
        let abs = tar_of(&[("/etc/cron.d/x", tar::EntryType::Regular, b"x", None)]);
        assert!(list(&abs).expect_err("an error").contains("absolute"));
        let link = tar_of(&[("l", tar::EntryType::Symlink, b"", Some("/etc"))]);
        assert!(list(&link).expect_err("an error").contains("outside"));
        let hard = tar_of(&[("h", tar::EntryType::Link, b"", Some("x"))]);
        assert!(list(&hard).expect_err("an error").contains("hard link"));
    }

    #[test]
    fn zip_members_and_zip_slip() {
        use std::io::Write;
        let zip_of = |names: &[&str]| {
            let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
            for n in names {
                if n.ends_with('/') {
                    w.add_directory(*n, zip::write::SimpleFileOptions::default())
                        .expect("ok");
                } else {
                    w.start_file(*n, zip::write::SimpleFileOptions::default())
                        .expect("ok");
                    w.write_all(b"z").expect("ok");
                }
            }
            w.finish().expect("ok").into_inner()
        };
        let (f, m) = list(&zip_of(&["d/", "d/f"])).expect("ok");
        assert_eq!(f, Format::Zip);
        assert_eq!(m[0].kind, Kind::Dir);
        assert_eq!(m[1].kind, Kind::File(crate::util::sha256_hex(b"z")));
        assert!(
            list(&zip_of(&["../../x"]))
                .expect_err("an error")
                .contains("`..`")
        );
    }
}
