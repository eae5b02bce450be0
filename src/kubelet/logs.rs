//! Container logs as the kubelet serves them: the CRI log files containerd writes under the
//! pod log root (`<root>/<namespace>_<pod>_<uid>/<container>/<restartCount>.log`, one record a
//! line, `<RFC3339Nano time> <stdout|stderr> <F|P> <content>`), read into the byte stream
//! `GET /containerLogs` answers with: partial records joined into lines, `tailLines`,
//! `sinceSeconds`/`sinceTime`, `timestamps`, `limitBytes`, `previous` and `follow`.
//!
//! Only reads: containerd writes these files and the kubelet's log manager rotates them; this
//! module never writes, renames or removes anything. Knows nothing of HTTP or of pods beyond
//! the directory layout.

use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

/// How often a followed file is checked for growth, rotation and its container's end.
const FOLLOW_POLL: Duration = Duration::from_millis(100);
/// Bytes read from a log file at a time.
const READ_CHUNK: usize = 64 * 1024;
/// Chunks buffered between the reader and a slow client.
const CHANNEL_DEPTH: usize = 16;

#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("failed to list log directory {path:?}: {source}")]
    ListDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("failed to open log file {path:?}: {source}")]
    Open {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("failed to tail log file {path:?}: {source}")]
    Tail {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// What to read, as upstream's `PodLogOptions` reach the kubelet.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LogOptions {
    pub follow: bool,
    /// Lines from the end to start with; `None` reads everything.
    pub tail_lines: Option<i64>,
    pub since_seconds: Option<i64>,
    pub since_time: Option<OffsetDateTime>,
    /// Prefix every line with its RFC 3339 time (nine fraction digits, as the kubelet does).
    pub timestamps: bool,
    /// Stop after this many bytes of output.
    pub limit_bytes: Option<i64>,
    /// The previous, terminated instance of the container (chosen by the caller).
    pub previous: bool,
}

impl LogOptions {
    /// The earliest record time to output: the later of `sinceSeconds` ago and `sinceTime`,
    /// as upstream's `NewLogOptions` decides.
    pub fn since(&self, now: OffsetDateTime) -> Option<OffsetDateTime> {
        let by_seconds = self
            .since_seconds
            .map(|s| now - time::Duration::seconds(s.max(0)));
        match (by_seconds, self.since_time) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        }
    }
}

/// `<root>/<namespace>_<pod>_<uid>/<container>`: where containerd writes a container's logs.
pub fn container_log_dir(
    root: &Path,
    namespace: &str,
    pod: &str,
    uid: &str,
    container: &str,
) -> PathBuf {
    root.join(format!("{namespace}_{pod}_{uid}"))
        .join(container)
}

/// The restart numbers of a container's log files (`<n>.log`), ascending; none when the
/// directory does not exist yet. Rotated files (`<n>.log.<stamp>`) are not listed.
pub fn restarts(dir: &Path) -> Result<Vec<u32>, LogError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(LogError::ListDir {
                path: dir.to_path_buf(),
                source,
            });
        }
    };
    let mut out: Vec<u32> = entries
        .filter_map(Result::ok)
        .filter_map(|e| {
            let name = e.file_name();
            name.to_str()?.strip_suffix(".log")?.parse().ok()
        })
        .collect();
    out.sort_unstable();
    Ok(out)
}

/// The log file of one instance (restart) of a container.
#[derive(Debug, Clone, PartialEq)]
pub struct LogFile {
    pub dir: PathBuf,
    pub restart: u32,
}

impl LogFile {
    pub fn path(&self) -> PathBuf {
        self.dir.join(format!("{}.log", self.restart))
    }

    /// The newest instance's file, or with `previous` the one before it; `None` when there
    /// is no such file.
    pub fn pick(dir: &Path, previous: bool) -> Result<Option<LogFile>, LogError> {
        let all = restarts(dir)?;
        let idx = if previous { 2 } else { 1 };
        Ok(all.len().checked_sub(idx).map(|i| LogFile {
            dir: dir.to_path_buf(),
            restart: all[i],
        }))
    }
}

/// Whether the container is still running; a follow ends once it says no and the file is
/// drained.
pub type StillRunning = Arc<dyn Fn() -> bool + Send + Sync>;

/// The bytes of a log as they are read.
pub type LogStream = ReceiverStream<Bytes>;

/// Opens `file` and streams it as `opts` asks. Errors opening or tailing the file are
/// returned here; later read errors end the stream (and are logged).
pub async fn stream(
    file: LogFile,
    opts: LogOptions,
    still_running: StillRunning,
) -> Result<LogStream, LogError> {
    let path = file.path();
    let tail = opts.tail_lines;
    let (std_file, start) = {
        let path = path.clone();
        tokio::task::spawn_blocking(move || open_at_tail(&path, tail))
            .await
            .map_err(|e| LogError::Open {
                path: file.path(),
                source: std::io::Error::other(e),
            })??
    };
    let ino = std_file.metadata().map(|m| m.ino()).unwrap_or(0);
    let mut f = tokio::fs::File::from_std(std_file);
    f.seek(SeekFrom::Start(start))
        .await
        .map_err(|source| LogError::Tail {
            path: path.clone(),
            source,
        })?;
    let (tx, rx) = mpsc::channel(CHANNEL_DEPTH);
    let reader = Reader {
        file,
        path,
        f,
        ino,
        offset: start,
        buf: Vec::new(),
        pending: None,
        since: opts.since(OffsetDateTime::now_utc()),
        timestamps: opts.timestamps,
        remaining: opts.limit_bytes.map(|b| b.max(0)),
        tx,
    };
    tokio::spawn(reader.run(opts.follow, still_running));
    Ok(ReceiverStream::new(rx))
}

fn open_at_tail(path: &Path, tail: Option<i64>) -> Result<(std::fs::File, u64), LogError> {
    let mut f = std::fs::File::open(path).map_err(|source| LogError::Open {
        path: path.to_path_buf(),
        source,
    })?;
    let start = match tail {
        Some(n) if n >= 0 => tail_start(&mut f, n).map_err(|source| LogError::Tail {
            path: path.to_path_buf(),
            source,
        })?,
        _ => 0,
    };
    Ok((f, start))
}

/// One parsed CRI record.
#[derive(Debug, PartialEq)]
struct Record<'a> {
    time: OffsetDateTime,
    partial: bool,
    content: &'a [u8],
}

/// Parses `<time> <stream> <tags> <content>` (without the record's newline); `None` for a
/// malformed record, which the kubelet skips.
fn parse_record(line: &[u8]) -> Option<Record<'_>> {
    let mut fields = line.splitn(4, |b| *b == b' ');
    let time = std::str::from_utf8(fields.next()?).ok()?;
    let time = OffsetDateTime::parse(time, &Rfc3339).ok()?;
    let stream = fields.next()?;
    if stream != b"stdout" && stream != b"stderr" {
        return None;
    }
    let tags = fields.next()?;
    // Tags are `:`-separated for forward compatibility; the first says partial or full.
    let partial = tags.split(|b| *b == b':').next() == Some(b"P");
    Some(Record {
        time,
        partial,
        content: fields.next().unwrap_or(b""),
    })
}

/// Whether a record ends a line for `tailLines` counting (malformed ones count as lines).
fn ends_line(record: &[u8]) -> bool {
    let mut fields = record.splitn(4, |b| *b == b' ');
    let tags = fields.nth(2).unwrap_or(b"F");
    tags.split(|b| *b == b':').next() != Some(b"P")
}

/// The offset where the last `n` lines begin, partial records counting as part of the line
/// their final record ends (a trailing unfinished line counts as one). Reads backwards.
fn tail_start(f: &mut std::fs::File, n: i64) -> std::io::Result<u64> {
    let len = f.metadata()?.len();
    if n == 0 || len == 0 {
        return Ok(len);
    }
    // `data` holds the file's bytes [pos, pos + data.len()); records are peeled off its end,
    // so every record but the file's last one ends in a newline.
    let mut pos = len;
    let mut data: Vec<u8> = Vec::new();
    let mut last = true;
    let mut need: i64 = 0;
    let mut found: i64 = 0;
    loop {
        if data.is_empty() {
            if pos == 0 {
                return Ok(0);
            }
            prepend_chunk(f, &mut pos, &mut data)?;
            continue;
        }
        let ends_nl = data.last() == Some(&b'\n');
        let body_end = if ends_nl { data.len() - 1 } else { data.len() };
        let start = match data[..body_end].iter().rposition(|b| *b == b'\n') {
            Some(i) => i + 1,
            None if pos == 0 => 0,
            None => {
                prepend_chunk(f, &mut pos, &mut data)?;
                continue;
            }
        };
        let full = ends_nl && ends_line(&data[start..body_end]);
        if last {
            last = false;
            // A trailing unfinished line is the last line itself.
            need = if full { n + 1 } else { n };
        }
        if full {
            found += 1;
            if found == need {
                return Ok(pos + data.len() as u64);
            }
        }
        if pos == 0 && start == 0 {
            return Ok(0);
        }
        data.truncate(start);
    }
}

/// Reads up to 64 KiB before `pos` onto the front of `data`.
fn prepend_chunk(f: &mut std::fs::File, pos: &mut u64, data: &mut Vec<u8>) -> std::io::Result<()> {
    const CHUNK: u64 = 64 * 1024;
    let read = CHUNK.min(*pos);
    *pos -= read;
    let mut chunk = vec![0u8; read as usize];
    f.seek(SeekFrom::Start(*pos))?;
    f.read_exact(&mut chunk)?;
    chunk.extend_from_slice(data);
    *data = chunk;
    Ok(())
}

/// Go's `RFC3339NanoFixed`, as the kubelet writes timestamps: nine fraction digits and the
/// record's own offset (`Z` for UTC).
pub fn format_timestamp(t: OffsetDateTime) -> String {
    let offset = t.offset();
    let zone = if offset.is_utc() {
        "Z".to_string()
    } else {
        let secs = offset.whole_seconds();
        let sign = if secs < 0 { '-' } else { '+' };
        let secs = secs.abs();
        format!("{sign}{:02}:{:02}", secs / 3600, (secs % 3600) / 60)
    };
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:09}{zone}",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.nanosecond()
    )
}

/// Reads one log file (following it if asked) into the channel.
struct Reader {
    file: LogFile,
    path: PathBuf,
    f: tokio::fs::File,
    /// The open file's inode: a different one at `path` means containerd reopened it.
    ino: u64,
    offset: u64,
    /// Bytes read that do not yet make a whole record.
    buf: Vec<u8>,
    /// A line being joined from partial records: the first record's time and the content.
    pending: Option<(OffsetDateTime, Vec<u8>)>,
    since: Option<OffsetDateTime>,
    timestamps: bool,
    remaining: Option<i64>,
    tx: mpsc::Sender<Bytes>,
}

/// Why reading stopped before the end.
enum Stop {
    /// `limitBytes` reached or the client went away.
    Done,
    Failed(std::io::Error),
}

impl Reader {
    async fn run(mut self, follow: bool, still_running: StillRunning) {
        match self.pump(follow, still_running).await {
            Ok(()) => self.finish().await,
            Err(Stop::Done) => {}
            Err(Stop::Failed(e)) => {
                tracing::warn!(path = %self.path.display(), error = %e, "reading container log failed");
            }
        }
    }

    async fn pump(&mut self, follow: bool, still_running: StillRunning) -> Result<(), Stop> {
        self.read_to_end().await?;
        if !follow {
            return Ok(());
        }
        loop {
            if self.reopened() {
                self.read_to_end().await?;
                self.switch_file().await?;
                continue;
            }
            // A newer instance's file, or a stopped container, ends the follow once drained.
            if self.superseded() || !still_running() {
                return self.read_to_end().await;
            }
            tokio::select! {
                _ = tokio::time::sleep(FOLLOW_POLL) => {}
                _ = self.tx.closed() => return Err(Stop::Done),
            }
            self.read_to_end().await?;
        }
    }

    /// Reads what the file holds now, sending every whole record.
    async fn read_to_end(&mut self) -> Result<(), Stop> {
        let mut chunk = vec![0u8; READ_CHUNK];
        loop {
            let n = self.f.read(&mut chunk).await.map_err(Stop::Failed)?;
            if n == 0 {
                return Ok(());
            }
            self.offset += n as u64;
            self.buf.extend_from_slice(&chunk[..n]);
            let mut consumed = 0;
            while let Some(i) = self.buf[consumed..].iter().position(|b| *b == b'\n') {
                let record = self.buf[consumed..consumed + i].to_vec();
                consumed += i + 1;
                self.record(&record, true).await?;
            }
            self.buf.drain(..consumed);
        }
    }

    /// Whether the file at `path` is no longer the one open (rotated or recreated), or was
    /// truncated under us.
    fn reopened(&self) -> bool {
        match std::fs::metadata(&self.path) {
            Ok(m) => m.ino() != self.ino || m.len() < self.offset,
            // Renamed away and not yet recreated: keep the old one until the new appears.
            Err(_) => false,
        }
    }

    async fn switch_file(&mut self) -> Result<(), Stop> {
        let f = tokio::fs::File::open(&self.path)
            .await
            .map_err(Stop::Failed)?;
        let meta = f.metadata().await.map_err(Stop::Failed)?;
        tracing::debug!(path = %self.path.display(), "following the reopened container log");
        self.ino = meta.ino();
        self.f = f;
        self.offset = 0;
        // containerd writes whole records, so leftovers are an unfinished write: emit them.
        self.flush_partial_record().await
    }

    fn superseded(&self) -> bool {
        restarts(&self.file.dir)
            .map(|all| all.last().is_some_and(|r| *r > self.file.restart))
            .unwrap_or(false)
    }

    async fn flush_partial_record(&mut self) -> Result<(), Stop> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let record = std::mem::take(&mut self.buf);
        self.record(&record, false).await
    }

    /// The end of the log: a record without its newline and an unfinished line are sent
    /// as they are, as the kubelet does.
    async fn finish(&mut self) {
        if self.flush_partial_record().await.is_err() {
            return;
        }
        if let Some((time, line)) = self.pending.take() {
            let _ = self.emit(time, line).await;
        }
    }

    async fn record(&mut self, raw: &[u8], terminated: bool) -> Result<(), Stop> {
        let Some(rec) = parse_record(raw) else {
            tracing::debug!(path = %self.path.display(), "skipping a malformed log record");
            return Ok(());
        };
        if rec.partial {
            match &mut self.pending {
                Some((_, line)) => line.extend_from_slice(rec.content),
                None => self.pending = Some((rec.time, rec.content.to_vec())),
            }
            return Ok(());
        }
        let (time, mut line) = match self.pending.take() {
            Some((t, mut line)) => {
                line.extend_from_slice(rec.content);
                (t, line)
            }
            None => (rec.time, rec.content.to_vec()),
        };
        if terminated {
            line.push(b'\n');
        }
        self.emit(time, line).await
    }

    async fn emit(&mut self, time: OffsetDateTime, line: Vec<u8>) -> Result<(), Stop> {
        if self.since.is_some_and(|s| time < s) {
            return Ok(());
        }
        let mut out = if self.timestamps {
            let mut v = format_timestamp(time).into_bytes();
            v.push(b' ');
            v.extend_from_slice(&line);
            v
        } else {
            line
        };
        let mut last = false;
        if let Some(rem) = &mut self.remaining {
            if (out.len() as i64) >= *rem {
                out.truncate(*rem as usize);
                last = true;
            }
            *rem -= out.len() as i64;
        }
        if !out.is_empty() && self.tx.send(Bytes::from(out)).await.is_err() {
            return Err(Stop::Done);
        }
        if last { Err(Stop::Done) } else { Ok(()) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use tokio_stream::StreamExt;

    const T1: &str = "2024-05-01T10:00:00.1Z";
    const T2: &str = "2024-05-01T10:00:01.000000002Z";
    const T3: &str = "2024-05-01T12:00:02.5+02:00";

    fn sample() -> String {
        format!(
            "{T1} stdout F first\n\
             {T2} stderr P sec\n\
             {T2} stderr P on\n\
             {T2} stderr F d\n\
             garbage line\n\
             {T3} stdout F third\n"
        )
    }

    fn dir_with(files: &[(u32, &str)]) -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        for (n, text) in files {
            std::fs::write(d.path().join(format!("{n}.log")), text).unwrap();
        }
        d
    }

    fn never() -> StillRunning {
        Arc::new(|| false)
    }

    async fn read(dir: &Path, opts: LogOptions) -> String {
        let file = LogFile::pick(dir, opts.previous).unwrap().unwrap();
        let s = stream(file, opts, never()).await.unwrap();
        let chunks: Vec<Bytes> = s.collect().await;
        String::from_utf8(chunks.concat()).unwrap()
    }

    #[test]
    fn records_parse_as_cri_writes_them() {
        let r = parse_record(b"2016-10-06T00:17:09.669794202Z stdout P log content 1").unwrap();
        assert!(r.partial);
        assert_eq!(r.content, b"log content 1");
        assert_eq!(r.time.nanosecond(), 669_794_202);
        let r = parse_record(b"2016-10-06T00:17:09.669794202Z stderr F").unwrap();
        assert!(!r.partial && r.content.is_empty());
        assert!(parse_record(b"2016-10-06T00:17:09Z stdin F x").is_none());
        assert!(parse_record(b"not a time stdout F x").is_none());
    }

    #[test]
    fn timestamps_are_go_rfc3339_nano_fixed() {
        let t = OffsetDateTime::parse(T1, &Rfc3339).unwrap();
        assert_eq!(format_timestamp(t), "2024-05-01T10:00:00.100000000Z");
        let t = OffsetDateTime::parse(T3, &Rfc3339).unwrap();
        assert_eq!(format_timestamp(t), "2024-05-01T12:00:02.500000000+02:00");
    }

    #[test]
    fn newest_and_previous_files_are_picked_by_restart_number() {
        let d = dir_with(&[(0, ""), (2, ""), (10, "")]);
        std::fs::write(d.path().join("2.log.20240101-000000"), "").unwrap();
        assert_eq!(restarts(d.path()).unwrap(), vec![0, 2, 10]);
        assert_eq!(LogFile::pick(d.path(), false).unwrap().unwrap().restart, 10);
        assert_eq!(LogFile::pick(d.path(), true).unwrap().unwrap().restart, 2);
        let one = dir_with(&[(0, "")]);
        assert!(LogFile::pick(one.path(), true).unwrap().is_none());
        assert!(restarts(&d.path().join("nosuch")).unwrap().is_empty());
    }

    #[tokio::test]
    async fn partial_records_join_into_lines() {
        let d = dir_with(&[(0, &sample())]);
        assert_eq!(
            read(d.path(), LogOptions::default()).await,
            "first\nsecond\nthird\n"
        );
    }

    #[tokio::test]
    async fn timestamps_prefix_each_line_with_its_first_record_time() {
        let d = dir_with(&[(0, &sample())]);
        let opts = LogOptions {
            timestamps: true,
            ..Default::default()
        };
        assert_eq!(
            read(d.path(), opts).await,
            "2024-05-01T10:00:00.100000000Z first\n\
             2024-05-01T10:00:01.000000002Z second\n\
             2024-05-01T12:00:02.500000000+02:00 third\n"
        );
    }

    #[tokio::test]
    async fn tail_counts_joined_lines() {
        let d = dir_with(&[(0, &sample())]);
        let tail = |n| LogOptions {
            tail_lines: Some(n),
            ..Default::default()
        };
        assert_eq!(read(d.path(), tail(0)).await, "");
        assert_eq!(read(d.path(), tail(1)).await, "third\n");
        // The malformed record counts as a line but prints nothing.
        assert_eq!(read(d.path(), tail(2)).await, "third\n");
        assert_eq!(read(d.path(), tail(3)).await, "second\nthird\n");
        assert_eq!(read(d.path(), tail(100)).await, "first\nsecond\nthird\n");
    }

    #[tokio::test]
    async fn tail_spans_read_chunks_and_an_unfinished_last_line() {
        let mut text = String::new();
        for i in 0..5000 {
            text.push_str(&format!("{T1} stdout F line {i:05} {}\n", "x".repeat(40)));
        }
        text.push_str(&format!("{T1} stdout P unfinished"));
        let d = dir_with(&[(0, &text)]);
        let out = read(
            d.path(),
            LogOptions {
                tail_lines: Some(3),
                ..Default::default()
            },
        )
        .await;
        let x = "x".repeat(40);
        assert_eq!(out, format!("line 04998 {x}\nline 04999 {x}\nunfinished"));
    }

    #[tokio::test]
    async fn since_skips_older_lines_and_limit_bytes_cuts() {
        let d = dir_with(&[(0, &sample())]);
        let since = LogOptions {
            since_time: Some(OffsetDateTime::parse("2024-05-01T10:00:00.5Z", &Rfc3339).unwrap()),
            ..Default::default()
        };
        assert_eq!(read(d.path(), since).await, "second\nthird\n");
        let limited = LogOptions {
            limit_bytes: Some(9),
            ..Default::default()
        };
        assert_eq!(read(d.path(), limited).await, "first\nsec");
        let since_secs = LogOptions {
            since_seconds: Some(60),
            ..Default::default()
        };
        assert_eq!(read(d.path(), since_secs).await, "");
    }

    #[test]
    fn since_is_the_later_of_seconds_and_time() {
        let now = OffsetDateTime::parse("2024-05-01T10:00:00Z", &Rfc3339).unwrap();
        let t = OffsetDateTime::parse("2024-05-01T09:59:50Z", &Rfc3339).unwrap();
        let o = LogOptions {
            since_seconds: Some(5),
            since_time: Some(t),
            ..Default::default()
        };
        assert_eq!(o.since(now), Some(now - time::Duration::seconds(5)));
        assert_eq!(LogOptions::default().since(now), None);
    }

    #[tokio::test]
    async fn previous_reads_the_instance_before() {
        let d = dir_with(&[
            (0, &format!("{T1} stdout F old\n")),
            (1, &format!("{T1} stdout F new\n")),
        ]);
        let prev = LogOptions {
            previous: true,
            ..Default::default()
        };
        assert_eq!(read(d.path(), prev).await, "old\n");
        assert_eq!(read(d.path(), LogOptions::default()).await, "new\n");
    }

    async fn next_text(s: &mut LogStream) -> String {
        let b = tokio::time::timeout(Duration::from_secs(5), s.next())
            .await
            .expect("a chunk in time")
            .expect("stream open");
        String::from_utf8(b.to_vec()).unwrap()
    }

    #[tokio::test]
    async fn follow_reads_growth_joins_partials_and_ends_when_the_container_stops() {
        let d = dir_with(&[(0, &format!("{T1} stdout F one\n"))]);
        let running = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let r = running.clone();
        let still: StillRunning = Arc::new(move || r.load(std::sync::atomic::Ordering::SeqCst));
        let opts = LogOptions {
            follow: true,
            ..Default::default()
        };
        let file = LogFile::pick(d.path(), false).unwrap().unwrap();
        let mut s = stream(file.clone(), opts, still).await.unwrap();
        assert_eq!(next_text(&mut s).await, "one\n");
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(file.path())
            .unwrap();
        // A record written in two pieces and a line split into partial records.
        write!(f, "{T1} stdout P tw").unwrap();
        f.flush().unwrap();
        tokio::time::sleep(Duration::from_millis(250)).await;
        writeln!(f, "o-").unwrap();
        writeln!(f, "{T1} stdout F and-a-half").unwrap();
        assert_eq!(next_text(&mut s).await, "two-and-a-half\n");
        // Written just before the container stops: still delivered, then the end.
        writeln!(f, "{T1} stdout F last").unwrap();
        running.store(false, std::sync::atomic::Ordering::SeqCst);
        assert_eq!(next_text(&mut s).await, "last\n");
        let end = tokio::time::timeout(Duration::from_secs(5), s.next()).await;
        assert!(matches!(end, Ok(None)), "the follow should end");
    }

    #[tokio::test]
    async fn follow_moves_to_a_reopened_file_and_stops_at_a_newer_instance() {
        let d = dir_with(&[(0, &format!("{T1} stdout F before\n"))]);
        let opts = LogOptions {
            follow: true,
            tail_lines: Some(0),
            ..Default::default()
        };
        let file = LogFile::pick(d.path(), false).unwrap().unwrap();
        let mut s = stream(file.clone(), opts, Arc::new(|| true)).await.unwrap();
        // Rotation: the file is renamed away and a new one created in its place.
        std::fs::rename(file.path(), d.path().join("0.log.20240501-100000")).unwrap();
        tokio::time::sleep(Duration::from_millis(250)).await;
        std::fs::write(file.path(), format!("{T1} stdout F after\n")).unwrap();
        assert_eq!(next_text(&mut s).await, "after\n");
        // A restart: the old instance's follow ends even though the container runs.
        std::fs::write(d.path().join("1.log"), format!("{T1} stdout F next\n")).unwrap();
        let end = tokio::time::timeout(Duration::from_secs(5), s.next()).await;
        assert!(matches!(end, Ok(None)), "the follow should end");
    }

    #[tokio::test]
    async fn a_dropped_reader_ends_the_follow() {
        let d = dir_with(&[(0, &format!("{T1} stdout F x\n"))]);
        let file = LogFile::pick(d.path(), false).unwrap().unwrap();
        let opts = LogOptions {
            follow: true,
            ..Default::default()
        };
        let s = stream(file, opts, Arc::new(|| true)).await.unwrap();
        drop(s);
        // Nothing to assert beyond not hanging: the reader task notices the closed channel.
        tokio::time::sleep(Duration::from_millis(300)).await;
    }

    #[tokio::test]
    async fn a_missing_file_is_an_open_error() {
        let d = tempfile::tempdir().unwrap();
        let file = LogFile {
            dir: d.path().to_path_buf(),
            restart: 0,
        };
        let err = stream(file, LogOptions::default(), never()).await;
        assert!(matches!(err, Err(LogError::Open { .. })));
    }
}
