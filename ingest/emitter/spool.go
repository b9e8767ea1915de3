package emitter

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

// The spool is a directory of segment files named by a zero-padded sequence
// number, so that a plain name sort is replay order:
//
//	00000000000000000001.seg   records, oldest first
//	00000000000000000001.pos   replay progress of that segment
//	LOCK                       held while an emitter uses the directory
//
// A segment starts with the 8-byte magic segmentMagic, then holds frames:
//
//	uint32 big-endian  payload length
//	uint32 big-endian  CRC-32C (Castagnoli) of the payload
//	payload            uvarint key length, key, value
//
// A frame that is cut short or fails its CRC ends the segment: after a
// crash the last frame may be half written, and nothing behind a bad frame
// can be trusted to start on a frame boundary.
//
// A progress file holds a uint64 offset into its segment below which every
// record is acknowledged by Kafka, and the CRC-32C of those 8 bytes. It is
// rewritten in place while the segment replays; a missing or damaged one
// means "replay the whole segment".
const (
	segmentExt     = ".seg"
	progressExt    = ".pos"
	lockName       = "LOCK"
	segmentMagic   = "VEILSP01"
	headerLen      = int64(len(segmentMagic))
	frameHeaderLen = 8
	progressLen    = 12
	seqDigits      = 20
	// maxRecordBytes bounds one spooled record. Kafka refuses far smaller
	// records by default; the bound keeps a corrupt length from making
	// the reader allocate gigabytes.
	maxRecordBytes = 32 << 20
	ioBufferBytes  = 64 << 10
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

var (
	// errSpoolFull is returned by append when MaxSpoolBytes would be exceeded.
	errSpoolFull = errors.New("spool is full")
	// errRecordTooLarge is returned by append for a record over maxRecordBytes.
	errRecordTooLarge = errors.New("record too large for the spool")
)

// segment is one spool file. The pump goroutine owns it.
type segment struct {
	seq     uint64
	path    string
	size    int64 // bytes on disk, header included
	records int   // records appended by this process; 0 for recovered segments
	sealed  bool  // no more appends: safe to replay

	// Writing, while the segment is the active one.
	w     *os.File
	bw    *bufio.Writer
	dirty bool // written since the last fsync

	// Replay.
	next  int64 // offset of the next frame to read
	acked int64 // every record before this offset is acknowledged
	saved int64 // acked offset last written to the progress file
	end   int64 // where valid frames end; -1 until the reader got there
	r     *os.File
	br    *bufio.Reader
	pos   *os.File
}

func (s *segment) progressPath() string {
	return strings.TrimSuffix(s.path, segmentExt) + progressExt
}

// done reports whether every record of the segment is acknowledged.
func (s *segment) done() bool { return s.sealed && s.end >= 0 && s.acked >= s.end }

// spool appends records to segment files and reads them back for replay.
// It is not safe for concurrent use: the pump goroutine owns it.
type spool struct {
	dir      string
	segBytes int64
	maxBytes int64
	fsync    fsyncMode
	log      *slog.Logger
	lock     io.Closer

	segs    []*segment // oldest first; the last one may be active
	active  *segment
	bytes   int64 // sum of segment sizes
	nextSeq uint64
	frame   []byte // reused to build frames
	// unflushed counts records in the active segment's buffer, lost if
	// flushing it fails.
	unflushed int
}

// openSpool locks dir, creating it if needed, and loads the segments a
// previous run left there, each resuming at its recorded progress.
func openSpool(dir string, segBytes, maxBytes int64, mode fsyncMode, log *slog.Logger) (*spool, error) {
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, fmt.Errorf("create spool dir: %w", err)
	}
	lock, err := lockDir(filepath.Join(dir, lockName))
	if err != nil {
		return nil, err
	}
	sp := &spool{dir: dir, segBytes: segBytes, maxBytes: maxBytes, fsync: mode, log: log, lock: lock, nextSeq: 1}
	if err := sp.load(); err != nil {
		_ = lock.Close()
		return nil, err
	}
	return sp, nil
}

func (sp *spool) load() error {
	entries, err := os.ReadDir(sp.dir)
	if err != nil {
		return fmt.Errorf("read spool dir: %w", err)
	}
	segs := map[uint64]bool{}
	for _, e := range entries {
		if seq, ok := parseName(e.Name(), segmentExt); ok && e.Type().IsRegular() {
			segs[seq] = true
		}
	}
	for _, e := range entries {
		// A progress file whose segment is gone was left by a crash
		// between the two removals.
		if seq, ok := parseName(e.Name(), progressExt); ok && !segs[seq] {
			_ = os.Remove(filepath.Join(sp.dir, e.Name()))
		}
	}
	seqs := make([]uint64, 0, len(segs))
	for seq := range segs {
		seqs = append(seqs, seq)
	}
	slices.Sort(seqs)
	for _, seq := range seqs {
		sp.nextSeq = max(sp.nextSeq, seq+1)
		s, err := sp.recover(seq)
		if err != nil {
			return err
		}
		if s != nil {
			sp.segs = append(sp.segs, s)
			sp.bytes += s.size
		}
	}
	return nil
}

// recover opens a segment left by a previous run. It returns nil for a
// segment that holds nothing to replay.
func (sp *spool) recover(seq uint64) (*segment, error) {
	s := &segment{seq: seq, path: filepath.Join(sp.dir, segmentName(seq)), sealed: true, end: -1}
	f, err := os.Open(s.path)
	if err != nil {
		return nil, fmt.Errorf("open spool segment: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("stat spool segment: %w", err)
	}
	s.size = st.Size()
	magic := make([]byte, headerLen)
	if _, err := io.ReadFull(f, magic); err != nil {
		// Created but never written before a crash.
		sp.log.Warn("removing spool segment without a header", "segment", s.path, "bytes", s.size)
		return nil, sp.removeFiles(s)
	}
	if string(magic) != segmentMagic {
		// Not ours, or from a future format: keep it for a human.
		sp.log.Error("spool segment has an unknown format; moving it aside", "segment", s.path)
		if err := os.Rename(s.path, s.path+".unknown"); err != nil {
			return nil, fmt.Errorf("move unknown spool segment aside: %w", err)
		}
		return nil, nil
	}
	s.next, s.acked, s.saved = headerLen, headerLen, headerLen
	if off, ok := readProgress(s.progressPath()); ok && off > headerLen {
		off = min(off, s.size)
		s.next, s.acked, s.saved = off, off, off
	}
	return s, nil
}

func segmentName(seq uint64) string {
	return fmt.Sprintf("%0*d%s", seqDigits, seq, segmentExt)
}

func parseName(name, ext string) (uint64, bool) {
	base, ok := strings.CutSuffix(name, ext)
	if !ok || len(base) != seqDigits {
		return 0, false
	}
	seq, err := strconv.ParseUint(base, 10, 64)
	return seq, err == nil
}

func readProgress(path string) (int64, bool) {
	b, err := os.ReadFile(path)
	if err != nil || len(b) != progressLen {
		return 0, false
	}
	if crc32.Checksum(b[:8], castagnoli) != binary.BigEndian.Uint32(b[8:]) {
		return 0, false
	}
	return int64(binary.BigEndian.Uint64(b[:8])), true
}

// append adds a record to the active segment, starting a new one when the
// active one is full. The record reaches the OS at the next flush.
func (sp *spool) append(key, value []byte) error {
	n := len(key) + len(value) + binary.MaxVarintLen64
	if n > maxRecordBytes {
		return errRecordTooLarge
	}
	sp.frame = append(sp.frame[:0], 0, 0, 0, 0, 0, 0, 0, 0) // header, filled below
	sp.frame = binary.AppendUvarint(sp.frame, uint64(len(key)))
	sp.frame = append(sp.frame, key...)
	sp.frame = append(sp.frame, value...)
	payload := sp.frame[frameHeaderLen:]
	binary.BigEndian.PutUint32(sp.frame[0:4], uint32(len(payload)))
	binary.BigEndian.PutUint32(sp.frame[4:8], crc32.Checksum(payload, castagnoli))
	size := int64(len(sp.frame))

	if sp.active != nil && sp.active.records > 0 && sp.active.size+size > sp.segBytes {
		if _, err := sp.seal(); err != nil {
			return err
		}
	}
	extra := size
	if sp.active == nil {
		extra += headerLen
	}
	if sp.bytes+extra > sp.maxBytes {
		return errSpoolFull
	}
	if sp.active == nil {
		if err := sp.create(); err != nil {
			return err
		}
	}
	if _, err := sp.active.bw.Write(sp.frame); err != nil {
		sp.abandonActive()
		return fmt.Errorf("write spool segment: %w", err)
	}
	sp.active.size += size
	sp.active.records++
	sp.active.dirty = true
	sp.bytes += size
	sp.unflushed++
	return nil
}

func (sp *spool) create() error {
	s := &segment{seq: sp.nextSeq, end: -1, next: headerLen, acked: headerLen, saved: headerLen}
	s.path = filepath.Join(sp.dir, segmentName(s.seq))
	f, err := os.OpenFile(s.path, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o640)
	if err != nil {
		return fmt.Errorf("create spool segment: %w", err)
	}
	sp.nextSeq++
	s.w = f
	s.bw = bufio.NewWriterSize(f, ioBufferBytes)
	if _, err := s.bw.WriteString(segmentMagic); err != nil {
		_ = f.Close()
		_ = os.Remove(s.path)
		return fmt.Errorf("write spool segment: %w", err)
	}
	s.size = headerLen
	sp.bytes += headerLen
	sp.segs = append(sp.segs, s)
	sp.active = s
	if sp.fsync != fsyncNever {
		// The new name must survive a power loss along with the data.
		syncDir(sp.dir)
	}
	return nil
}

// flush hands buffered records to the OS, so that a crash of the process
// (not of the machine) loses none of them. It returns how many records were
// lost if the write failed.
func (sp *spool) flush() (lost int, err error) {
	if sp.active == nil || sp.active.bw.Buffered() == 0 {
		sp.unflushed = 0
		return 0, nil
	}
	if err := sp.active.bw.Flush(); err != nil {
		lost = sp.unflushed
		sp.abandonActive()
		return lost, fmt.Errorf("flush spool segment: %w", err)
	}
	sp.unflushed = 0
	return 0, nil
}

// sync flushes and fsyncs the active segment if it changed.
func (sp *spool) sync() (lost int, err error) {
	if lost, err = sp.flush(); err != nil {
		return lost, err
	}
	if sp.active == nil || !sp.active.dirty {
		return 0, nil
	}
	if err := sp.active.w.Sync(); err != nil {
		return 0, fmt.Errorf("fsync spool segment: %w", err)
	}
	sp.active.dirty = false
	return 0, nil
}

// abandonActive closes the active segment after a write error. What it
// holds up to the error stays replayable; a partial frame at its end is
// ignored as a torn tail.
func (sp *spool) abandonActive() {
	s := sp.active
	if s == nil {
		return
	}
	_ = s.w.Close()
	s.w, s.bw = nil, nil
	if st, err := os.Stat(s.path); err == nil {
		sp.bytes += st.Size() - s.size
		s.size = st.Size()
	}
	s.sealed = true
	sp.active = nil
	sp.unflushed = 0
}

// seal closes the active segment for writing so it can be replayed, and
// returns it (nil when there was no active segment).
func (sp *spool) seal() (*segment, error) {
	s := sp.active
	if s == nil {
		return nil, nil
	}
	if _, err := sp.flush(); err != nil {
		return nil, err
	}
	var err error
	if sp.fsync != fsyncNever && s.dirty {
		if err = s.w.Sync(); err != nil {
			err = fmt.Errorf("fsync spool segment: %w", err)
		}
	}
	if cerr := s.w.Close(); cerr != nil && err == nil {
		err = fmt.Errorf("close spool segment: %w", cerr)
	}
	s.w, s.bw, s.dirty, s.sealed = nil, nil, false, true
	sp.active = nil
	return s, err
}

// activeRecords is how many records the active segment holds.
func (sp *spool) activeRecords() int {
	if sp.active == nil {
		return 0
	}
	return sp.active.records
}

// replayable reports whether a sealed segment still has records to read.
func (sp *spool) replayable() bool {
	for _, s := range sp.segs {
		if s.sealed && (s.end < 0 || s.next < s.end) {
			return true
		}
	}
	return false
}

// empty reports whether the spool holds no segment at all.
func (sp *spool) empty() bool { return len(sp.segs) == 0 }

// next reads the next record to replay from the oldest sealed segment that
// has one. ok is false when every sealed segment has been read to its end.
// Segments whose records are all acknowledged are removed on the way.
func (sp *spool) next() (key, value []byte, seg *segment, end int64, ok bool) {
	for i := 0; i < len(sp.segs); i++ {
		s := sp.segs[i]
		if !s.sealed {
			return nil, nil, nil, 0, false
		}
		if s.end >= 0 && s.next >= s.end {
			if s.done() && sp.remove(s) {
				i--
			}
			continue
		}
		key, value, err := sp.read(s)
		if err == nil {
			return key, value, s, s.next, true
		}
		s.end = s.next
		if !errors.Is(err, io.EOF) {
			sp.log.Warn("spool segment ends in a torn or corrupt record; ignoring the rest",
				"segment", s.path, "offset", s.next, "ignored_bytes", s.size-s.next, "err", err)
		}
		sp.closeReader(s)
		if s.done() && sp.remove(s) {
			i--
		}
	}
	return nil, nil, nil, 0, false
}

// read returns the frame at s.next and advances past it. io.EOF means a
// clean end; any other error a torn or corrupt frame.
func (sp *spool) read(s *segment) (key, value []byte, err error) {
	if s.r == nil {
		f, err := os.Open(s.path)
		if err != nil {
			return nil, nil, fmt.Errorf("open spool segment: %w", err)
		}
		if _, err := f.Seek(s.next, io.SeekStart); err != nil {
			_ = f.Close()
			return nil, nil, fmt.Errorf("seek spool segment: %w", err)
		}
		s.r, s.br = f, bufio.NewReaderSize(f, ioBufferBytes)
	}
	var hdr [frameHeaderLen]byte
	if n, err := io.ReadFull(s.br, hdr[:]); err != nil {
		if n == 0 && errors.Is(err, io.EOF) {
			return nil, nil, io.EOF
		}
		return nil, nil, fmt.Errorf("read frame header: %w", err)
	}
	n := binary.BigEndian.Uint32(hdr[0:4])
	if n == 0 || n > maxRecordBytes {
		return nil, nil, fmt.Errorf("frame length %d out of range", n)
	}
	payload := make([]byte, n)
	if _, err := io.ReadFull(s.br, payload); err != nil {
		return nil, nil, fmt.Errorf("read frame: %w", err)
	}
	if crc32.Checksum(payload, castagnoli) != binary.BigEndian.Uint32(hdr[4:8]) {
		return nil, nil, errors.New("frame checksum mismatch")
	}
	klen, w := binary.Uvarint(payload)
	if w <= 0 || klen > uint64(len(payload)-w) {
		return nil, nil, errors.New("frame key length out of range")
	}
	key = payload[w : w+int(klen) : w+int(klen)]
	value = payload[w+int(klen):]
	s.next += frameHeaderLen + int64(n)
	return key, value, nil
}

func (sp *spool) closeReader(s *segment) {
	if s.r != nil {
		_ = s.r.Close()
		s.r, s.br = nil, nil
	}
}

// acked records that every record of s before off is acknowledged, and
// removes s once all of it is.
func (sp *spool) acked(s *segment, off int64) {
	if off > s.acked {
		s.acked = off
	}
	if s.done() {
		sp.remove(s)
	}
}

// rewind makes replay start again at each segment's acknowledged offset,
// after records in flight were given up on.
func (sp *spool) rewind() {
	for _, s := range sp.segs {
		sp.closeReader(s)
		s.next = s.acked
	}
}

// saveProgress writes the acknowledged offset of every segment whose
// offset moved since the last save.
func (sp *spool) saveProgress() error {
	var first error
	for _, s := range sp.segs {
		if s.acked == s.saved {
			continue
		}
		if err := sp.writeProgress(s); err != nil && first == nil {
			first = err
		}
	}
	return first
}

func (sp *spool) writeProgress(s *segment) error {
	if s.pos == nil {
		f, err := os.OpenFile(s.progressPath(), os.O_CREATE|os.O_RDWR, 0o640)
		if err != nil {
			return fmt.Errorf("open spool progress: %w", err)
		}
		s.pos = f
	}
	var b [progressLen]byte
	binary.BigEndian.PutUint64(b[:8], uint64(s.acked))
	binary.BigEndian.PutUint32(b[8:], crc32.Checksum(b[:8], castagnoli))
	// 12 bytes at offset 0 stay within one disk sector, so a crash leaves
	// either the old or the new offset; the CRC catches anything else and
	// then the segment replays from its start, which only resends.
	if _, err := s.pos.WriteAt(b[:], 0); err != nil {
		return fmt.Errorf("write spool progress: %w", err)
	}
	if sp.fsync != fsyncNever {
		if err := s.pos.Sync(); err != nil {
			return fmt.Errorf("fsync spool progress: %w", err)
		}
	}
	s.saved = s.acked
	return nil
}

// remove deletes a fully acknowledged segment. It reports whether s left
// the list.
func (sp *spool) remove(s *segment) bool {
	i := slices.Index(sp.segs, s)
	if i < 0 {
		return false
	}
	sp.closeReader(s)
	if s.pos != nil {
		_ = s.pos.Close()
		s.pos = nil
	}
	if err := sp.removeFiles(s); err != nil {
		// Left on disk it would replay again after a restart: harmless
		// duplicates, so carry on.
		sp.log.Warn("remove replayed spool segment", "segment", s.path, "err", err)
	}
	sp.segs = slices.Delete(sp.segs, i, i+1)
	sp.bytes -= s.size
	return true
}

func (sp *spool) removeFiles(s *segment) error {
	// The segment goes first: a progress file without its segment is
	// cleaned up at the next start, a segment without progress replays.
	if err := os.Remove(s.path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove spool segment: %w", err)
	}
	if err := os.Remove(s.progressPath()); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("remove spool progress: %w", err)
	}
	return nil
}

// close seals the active segment with an fsync whatever the policy, saves
// progress and releases the directory.
func (sp *spool) close() error {
	var errs []error
	if sp.active != nil {
		s := sp.active
		if _, err := sp.flush(); err != nil {
			errs = append(errs, err)
		} else if s.w != nil {
			if err := s.w.Sync(); err != nil {
				errs = append(errs, fmt.Errorf("fsync spool segment: %w", err))
			}
		}
		if s.w != nil {
			if err := s.w.Close(); err != nil {
				errs = append(errs, fmt.Errorf("close spool segment: %w", err))
			}
		}
		s.w, s.bw, s.sealed = nil, nil, true
		sp.active = nil
	}
	if err := sp.saveProgress(); err != nil {
		errs = append(errs, err)
	}
	for _, s := range sp.segs {
		sp.closeReader(s)
		if s.pos != nil {
			if err := s.pos.Sync(); err != nil {
				errs = append(errs, fmt.Errorf("fsync spool progress: %w", err))
			}
			_ = s.pos.Close()
			s.pos = nil
		}
	}
	syncDir(sp.dir)
	if err := sp.lock.Close(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// syncDir fsyncs a directory so that created and removed names are durable.
// Failure only weakens durability after a power loss, so it is ignored.
func syncDir(dir string) {
	if d, err := os.Open(dir); err == nil {
		_ = d.Sync()
		_ = d.Close()
	}
}
