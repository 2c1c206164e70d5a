/*
 * shoal-guest: the workload of Shoal's QEMU test guest.
 *
 * Dirties a RAM area with self-describing page stamps, writes sequenced records to a disk ring
 * with O_DIRECT|O_DSYNC, prints heartbeats on the console and answers commands read from it.
 * See README.md beside this file for the console protocol.
 *
 * Built with: gcc -static -O2 -o shoal-guest shoal-guest.c
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <linux/fs.h>
#include <poll.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#define PAGE 4096
#define WORDS (PAGE / 8)
#define PAGE_MAGIC 0x3147504c414f4853ULL /* "SHOALPG1" little endian */
#define REC_MAGIC 0x3143524c414f4853ULL  /* "SHOALRC1" little endian */
#define TICK_MS 10
#define MAX_CATCHUP_TICKS 4
#define READ_CHUNK (256 * 1024)
#define HB_MAX_QUEUED 512 /* bytes waiting in the console's output queue above which a heartbeat is skipped */

/* ---- configuration ---- */
static uint64_t cfg_mem_mib = 32;
static double cfg_rate = 1000;
static double cfg_records = 20;
static uint64_t cfg_hb_ms = 50;
static const char *cfg_disk = "/dev/vda";

/* ---- state ---- */
static uint64_t *area;      /* npages * WORDS */
static uint64_t npages;
static uint64_t *expected;  /* expected version of every page (in guest RAM too) */
static uint64_t total_writes;
static uint64_t boot_id;
static uint64_t prng_state;

static int disk_fd = -1;
static uint64_t disk_slots;
static uint64_t total_records;
static uint64_t *recbuf;    /* one aligned record buffer */
static int disk_error_reported;

/* ---- output: one write() per line ---- */
static void out(const char *fmt, ...)
{
	char line[512];
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(line, sizeof line - 1, fmt, ap);
	va_end(ap);
	if (n < 0) return;
	if (n > (int)sizeof line - 2) n = sizeof line - 2;
	line[n++] = '\n';
	const char *p = line;
	while (n > 0) {
		ssize_t w = write(1, p, n);
		if (w < 0) {
			if (errno == EINTR || errno == EAGAIN) continue;
			return;
		}
		p += w;
		n -= w;
	}
}

/* ---- hashing and pseudo-random fill ---- */
static inline uint64_t mix64(uint64_t z)
{
	z += 0x9e3779b97f4a7c15ULL;
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	return z ^ (z >> 31);
}

static inline uint64_t xorshift(uint64_t *s)
{
	uint64_t x = *s;
	x ^= x << 13;
	x ^= x >> 7;
	x ^= x << 17;
	*s = x;
	return x * 0x2545f4914f6cdd1dULL;
}

static uint64_t prng(void) { return xorshift(&prng_state); }

/* A block is 512 words: [0]=magic [1]=index/seq [2]=version/boot id [3]=checksum [4..]=fill. */
static inline uint64_t fill_seed(uint64_t magic, uint64_t a, uint64_t b)
{
	uint64_t s = mix64(magic ^ mix64(a) ^ (b * 0x9e3779b97f4a7c15ULL));
	return s ? s : 1;
}

static uint64_t block_checksum(const uint64_t *w)
{
	uint64_t h = 0xcbf29ce484222325ULL;
	for (int i = 0; i < WORDS; i++) {
		if (i == 3) continue;
		h = (h ^ w[i]) * 0x100000001b3ULL;
		h ^= h >> 29;
	}
	return mix64(h);
}

static void block_fill(uint64_t *w, uint64_t magic, uint64_t a, uint64_t b)
{
	uint64_t s = fill_seed(magic, a, b);
	w[0] = magic;
	w[1] = a;
	w[2] = b;
	for (int i = 4; i < WORDS; i++) w[i] = xorshift(&s);
	w[3] = block_checksum(w);
}

/* Returns NULL when the block is good, else a short reason (no spaces); *bad_word gets the word. */
static const char *block_verify(const uint64_t *w, uint64_t magic, uint64_t a, uint64_t b, int *bad_word)
{
	*bad_word = -1;
	if (w[0] != magic) return "magic";
	if (w[1] != a) return magic == PAGE_MAGIC ? "index" : "seq";
	if (w[2] != b) return magic == PAGE_MAGIC ? "version" : "boot_id";
	if (w[3] != block_checksum(w)) return "checksum";
	uint64_t s = fill_seed(magic, a, b);
	for (int i = 4; i < WORDS; i++) {
		if (w[i] != xorshift(&s)) { *bad_word = i; return "fill"; }
	}
	return NULL;
}

/* ---- RAM area ---- */
static void write_page(uint64_t i)
{
	uint64_t v = ++expected[i];
	block_fill(area + i * WORDS, PAGE_MAGIC, i, v);
	total_writes++;
}

/* ---- disk ring ---- */
static void write_record(void)
{
	uint64_t seq = total_records + 1;
	uint64_t slot = (seq - 1) % disk_slots;
	block_fill(recbuf, REC_MAGIC, seq, boot_id);
	ssize_t w = pwrite(disk_fd, recbuf, PAGE, (off_t)(slot * PAGE));
	if (w != PAGE) {
		if (!disk_error_reported) {
			out("SHOAL-ERR disk write failed seq=%" PRIu64 " errno=%d", seq, w < 0 ? errno : 0);
			disk_error_reported = 1;
		}
		return;
	}
	total_records = seq;
}

/* ---- check ---- */
static void check(const char *nonce)
{
	uint64_t bad_pages = 0, bad_records = 0;
	char first[160] = "-";
	int bw;

	for (uint64_t i = 0; i < npages; i++) {
		const uint64_t *w = area + i * WORDS;
		const char *why = block_verify(w, PAGE_MAGIC, i, expected[i], &bw);
		if (!why) continue;
		if (bad_pages + bad_records == 0) {
			if (!strcmp(why, "version"))
				snprintf(first, sizeof first, "page:%" PRIu64 ":version:want=%" PRIu64 ":got=%" PRIu64, i, expected[i], w[2]);
			else if (bw >= 0)
				snprintf(first, sizeof first, "page:%" PRIu64 ":fill:offset=%d", i, bw * 8);
			else
				snprintf(first, sizeof first, "page:%" PRIu64 ":%s", i, why);
		}
		bad_pages++;
	}

	uint64_t in_ring = 0;
	if (disk_fd >= 0 && total_records > 0) {
		in_ring = total_records < disk_slots ? total_records : disk_slots;
		/* Slots 0..in_ring-1 hold the last in_ring seqs; slot j holds the largest seq <= total with (seq-1) % slots == j. */
		uint64_t *buf = NULL;
		if (posix_memalign((void **)&buf, PAGE, READ_CHUNK) != 0) {
			out("SHOAL-ERR out of memory");
			return;
		}
		uint64_t per = READ_CHUNK / PAGE;
		for (uint64_t j0 = 0; j0 < in_ring; j0 += per) {
			uint64_t n = in_ring - j0 < per ? in_ring - j0 : per;
			ssize_t r = pread(disk_fd, buf, n * PAGE, (off_t)(j0 * PAGE));
			int err = r < 0 ? errno : 0;
			for (uint64_t k = 0; k < n; k++) {
				uint64_t j = j0 + k;
				uint64_t seq = j + 1 + disk_slots * ((total_records - (j + 1)) / disk_slots);
				const char *why;
				char tmp[48];
				if (r < (ssize_t)((k + 1) * PAGE)) {
					snprintf(tmp, sizeof tmp, "read_error:errno=%d", err);
					why = tmp;
					bw = -1;
				} else {
					why = block_verify(buf + k * WORDS, REC_MAGIC, seq, boot_id, &bw);
				}
				if (!why) continue;
				if (bad_pages + bad_records == 0) {
					if (bw >= 0)
						snprintf(first, sizeof first, "record:%" PRIu64 ":slot=%" PRIu64 ":fill:offset=%d", seq, j, bw * 8);
					else
						snprintf(first, sizeof first, "record:%" PRIu64 ":slot=%" PRIu64 ":%s", seq, j, why);
				}
				bad_records++;
			}
		}
		free(buf);
	}

	out("SHOAL-VERDICT nonce=%s ok=%d pages=%" PRIu64 " writes=%" PRIu64 " records=%" PRIu64
	    " bad_pages=%" PRIu64 " bad_records=%" PRIu64 " first_bad=%s",
	    nonce, bad_pages + bad_records == 0, npages, total_writes, total_records, bad_pages, bad_records, first);
}

/* ---- commands ---- */
static int parse_num(const char *s, double *v)
{
	char *end;
	errno = 0;
	double d = strtod(s, &end);
	if (errno || end == s || *end || d < 0 || d > 1e9) return -1;
	*v = d;
	return 0;
}

static void command(char *line)
{
	char *argv[4];
	int argc = 0;
	for (char *tok = strtok(line, " \t"); tok && argc < 4; tok = strtok(NULL, " \t")) argv[argc++] = tok;
	if (argc == 0) return;
	double v;
	if (!strcmp(argv[0], "check")) {
		char nonce[64] = "-";
		if (argc > 1) snprintf(nonce, sizeof nonce, "%s", argv[1]);
		check(nonce);
	} else if (!strcmp(argv[0], "rate")) {
		if (argc != 2 || parse_num(argv[1], &v)) { out("SHOAL-ERR bad value"); return; }
		cfg_rate = v;
		out("SHOAL-OK rate=%.0f", cfg_rate);
	} else if (!strcmp(argv[0], "records")) {
		if (argc != 2 || parse_num(argv[1], &v)) { out("SHOAL-ERR bad value"); return; }
		cfg_records = v;
		out("SHOAL-OK records=%.0f", cfg_records);
	} else {
		out("SHOAL-ERR unknown command");
	}
}

/* ---- console ---- */
static void console_setup(void)
{
	struct termios t;
	if (tcgetattr(0, &t) != 0) return;
	t.c_iflag &= ~(IGNBRK | BRKINT | PARMRK | ISTRIP | INLCR | IGNCR | ICRNL | IXON | IXOFF);
	t.c_lflag &= ~(ECHO | ECHONL | ECHOE | ECHOK | ICANON | ISIG | IEXTEN);
	t.c_oflag |= OPOST | ONLCR; /* "\n" goes out as "\r\n", like the kernel's own console lines */
	t.c_cc[VMIN] = 1;
	t.c_cc[VTIME] = 0;
	cfsetispeed(&t, B115200);
	cfsetospeed(&t, B115200);
	tcsetattr(0, TCSANOW, &t);
	if (isatty(1) && tcgetattr(1, &t) == 0) {
		t.c_oflag |= OPOST | ONLCR;
		tcsetattr(1, TCSANOW, &t);
	}
	tcflush(0, TCIFLUSH);
}

static double now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

/* ---- arguments: shoal.KEY=VALUE (as on the kernel command line) or KEY=VALUE ---- */
static void parse_args(int argc, char **argv)
{
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		if (!strncmp(a, "shoal.", 6)) a += 6;
		const char *eq = strchr(a, '=');
		if (!eq) continue;
		size_t k = eq - a;
		const char *v = eq + 1;
		if (k == 3 && !strncmp(a, "mem", 3)) cfg_mem_mib = strtoull(v, NULL, 10);
		else if (k == 4 && !strncmp(a, "rate", 4)) cfg_rate = strtod(v, NULL);
		else if (k == 4 && !strncmp(a, "disk", 4)) cfg_disk = v;
		else if (k == 7 && !strncmp(a, "records", 7)) cfg_records = strtod(v, NULL);
		else if (k == 2 && !strncmp(a, "hb", 2)) cfg_hb_ms = strtoull(v, NULL, 10);
	}
	if (cfg_mem_mib == 0) cfg_mem_mib = 1;
	if (cfg_hb_ms == 0) cfg_hb_ms = 50;
	if (cfg_rate < 0) cfg_rate = 0;
	if (cfg_records < 0) cfg_records = 0;
}

static void open_disk(const char **why)
{
	*why = NULL;
	if (!strcmp(cfg_disk, "none") || !*cfg_disk) { *why = "disabled"; return; }
	int fd = open(cfg_disk, O_RDWR | O_DIRECT | O_DSYNC);
	if (fd < 0) { *why = strerror(errno); return; }
	uint64_t size = 0;
	if (ioctl(fd, BLKGETSIZE64, &size) != 0) {
		off_t end = lseek(fd, 0, SEEK_END);
		size = end > 0 ? (uint64_t)end : 0;
	}
	if (size / PAGE == 0) { close(fd); *why = "too_small"; return; }
	if (posix_memalign((void **)&recbuf, PAGE, PAGE) != 0) { close(fd); *why = "no_memory"; return; }
	disk_fd = fd;
	disk_slots = size / PAGE;
}

int main(int argc, char **argv)
{
	parse_args(argc, argv);
	console_setup();

	if (getrandom(&boot_id, sizeof boot_id, GRND_NONBLOCK) != sizeof boot_id) {
		struct timespec ts;
		clock_gettime(CLOCK_REALTIME, &ts);
		unsigned lo, hi;
		__asm__ volatile("rdtsc" : "=a"(lo), "=d"(hi));
		boot_id = mix64(((uint64_t)hi << 32 | lo) ^ mix64(ts.tv_nsec ^ (uint64_t)ts.tv_sec << 30) ^ getpid());
	}
	prng_state = mix64(boot_id) | 1;

	npages = cfg_mem_mib * 1024 * 1024 / PAGE;
	area = mmap(NULL, npages * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
	expected = calloc(npages, sizeof *expected);
	if (area == MAP_FAILED || !expected) {
		out("SHOAL-ERR cannot allocate %" PRIu64 " MiB", cfg_mem_mib);
		return 2;
	}
	for (uint64_t i = 0; i < npages; i++) write_page(i); /* touch every page: version 1 */
	total_writes = 0;

	const char *disk_why;
	open_disk(&disk_why);
	if (disk_fd >= 0)
		out("SHOAL-READY pages=%" PRIu64 " rate=%.0f records_per_s=%.0f disk=%s disk_slots=%" PRIu64,
		    npages, cfg_rate, cfg_records, cfg_disk, disk_slots);
	else
		{
		char why[160];
		snprintf(why, sizeof why, "%s:%s", cfg_disk, disk_why);
		for (char *c = why; *c; c++) if (*c == ' ' || *c == '=') *c = '_';
		out("SHOAL-READY pages=%" PRIu64 " rate=%.0f records_per_s=%.0f disk=none disk_slots=0 disk_error=%s",
		    npages, cfg_rate, cfg_records, why);
	}

	char line[256];
	size_t len = 0;
	int overflow = 0, stdin_open = 1;
	uint64_t hb_seq = 0;
	double start = now_ms(), last = start, next_tick = start + TICK_MS, next_hb = start + cfg_hb_ms;
	double owed_w = 0, owed_r = 0;

	for (;;) {
		double now = now_ms();
		if (now >= next_tick) {
			double dt = (now - last) / 1e3;
			last = now;
			double cap;
			owed_w += cfg_rate * dt;
			cap = cfg_rate * MAX_CATCHUP_TICKS * TICK_MS / 1e3 + 1;
			if (owed_w > cap) owed_w = cap;
			while (owed_w >= 1) { write_page(prng() % npages); owed_w -= 1; }
			if (disk_fd >= 0) {
				owed_r += cfg_records * dt;
				cap = cfg_records * MAX_CATCHUP_TICKS * TICK_MS / 1e3 + 1;
				if (owed_r > cap) owed_r = cap;
				while (owed_r >= 1) { write_record(); owed_r -= 1; }
			}
			next_tick += TICK_MS;
			if (next_tick <= now) next_tick = now + TICK_MS;
		}
		now = now_ms();
		if (now >= next_hb) {
			/* A console nobody drains (a client connected to QEMU's socket that does not read)
			 * must not stall the workload: skip the beat (its seq shows the gap) rather than block. */
			int queued = 0;
			++hb_seq;
			if (ioctl(1, TIOCOUTQ, &queued) != 0 || queued < HB_MAX_QUEUED)
				out("SHOAL-HB seq=%" PRIu64 " writes=%" PRIu64 " records=%" PRIu64 " uptime_ms=%.0f",
				    hb_seq, total_writes, total_records, now - start);
			next_hb += cfg_hb_ms;
			if (next_hb <= now) next_hb = now + cfg_hb_ms;
		}

		now = now_ms();
		double until = (next_tick < next_hb ? next_tick : next_hb) - now;
		int timeout = until <= 0 ? 0 : (int)until + 1;
		struct pollfd p = { .fd = 0, .events = POLLIN };
		int r = poll(&p, stdin_open ? 1 : 0, timeout);
		if (r > 0 && (p.revents & (POLLIN | POLLHUP | POLLERR))) {
			char buf[256];
			ssize_t n = read(0, buf, sizeof buf);
			if (n <= 0) {
				if (n == 0 || (errno != EINTR && errno != EAGAIN)) stdin_open = 0;
				continue;
			}
			for (ssize_t i = 0; i < n; i++) {
				char c = buf[i];
				if (c == '\n' || c == '\r') {
					if (!overflow && len > 0) {
						line[len] = 0;
						command(line);
					}
					len = 0;
					overflow = 0;
				} else if (len < sizeof line - 1) {
					line[len++] = c;
				} else {
					overflow = 1;
				}
			}
		}
	}
}
