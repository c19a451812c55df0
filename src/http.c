/*-------------------------------------------------------------------------
 *
 * http.c
 *	  The deliver worker's HTTP client: libcurl's multi interface driven by
 *	  a PostgreSQL WaitEventSet.
 *
 * One curl multi handle serves every endpoint.  Connections are kept alive
 * and reused (the multi handle's connection cache), HTTP/2 is negotiated
 * over TLS when the server offers it (several requests then share one
 * connection as streams).  The worker waits in one place for both its latch
 * and curl's sockets: curl tells us which sockets it wants watched
 * (CURLMOPT_SOCKETFUNCTION) and when it needs a timer
 * (CURLMOPT_TIMERFUNCTION); we keep a WaitEventSet holding the latch, the
 * postmaster-death event and those sockets, rebuilt only when the set of
 * sockets changes, so that a commit waking the worker is seen at once even
 * while transfers are running.
 *
 * Addresses are checked when curl opens a socket (CURLOPT_OPENSOCKETFUNCTION):
 * a private, loopback or link-local address is refused unless
 * odoo_sync.allow_private_endpoints is on, so a DNS answer that changes after
 * the endpoint was created cannot redirect deliveries into the private network.
 *
 * Easy handles are kept in a free list and reused.  Memory: requests belong
 * to the caller; this file allocates in TopMemoryContext only for its socket
 * table.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include "miscadmin.h"
#include "pgstat.h"
#include "storage/latch.h"
#include "utils/memutils.h"
#include "utils/timestamp.h"

#include "deliver.h"

typedef struct HttpSocket
{
	curl_socket_t fd;
	int			what;			/* CURL_POLL_IN / OUT / INOUT */
	int			pos;			/* position in the WaitEventSet, -1 if none */
	bool		idle;			/* curl wants nothing of it (a kept-alive
								 * connection between requests): still in the
								 * set, watched for the peer closing it */
} HttpSocket;

/*
 * The sockets curl opened through opensocket_cb and has not closed through
 * closesocket_cb (a bitmap by fd number): only these may stay in the wait
 * set while idle.  curl has sockets of its own too (its threaded resolver's
 * socketpair), which it closes without the callback right after removing
 * them: kept in the set, their number reused by the next socket would meet
 * a stale registration (epoll_ctl() ENOENT, an ERROR in the worker).
 */
static uint8 *own_fds = NULL;
static int	own_fds_size = 0;

static void
own_fd_set(curl_socket_t fd, bool own)
{
	if (fd < 0)
		return;
	if (fd >= own_fds_size * 8)
	{
		int			size = Max(own_fds_size * 2, Max(64, fd / 8 + 1));

		own_fds = own_fds ?
			repalloc(own_fds, size) :
			MemoryContextAlloc(TopMemoryContext, size);
		memset(own_fds + own_fds_size, 0, size - own_fds_size);
		own_fds_size = size;
	}
	if (own)
		own_fds[fd / 8] |= (uint8) (1 << (fd % 8));
	else
		own_fds[fd / 8] &= (uint8) ~(1 << (fd % 8));
}

static bool
own_fd(curl_socket_t fd)
{
	return fd >= 0 && fd < own_fds_size * 8 &&
		(own_fds[fd / 8] & (1 << (fd % 8))) != 0;
}

static CURLM *multi = NULL;
static HttpSocket *sockets = NULL;
static int	nsockets = 0;
static int	maxsockets = 0;
static bool sockets_changed = true;
static WaitEventSet *wes = NULL;
static int	wes_size = 0;
static long curl_timeout_ms = -1;	/* -1: no timer */
static TimestampTz curl_timer_set_at = 0;
static int	nrequests = 0;		/* started, not yet returned as done */
static int	curl_running = 0;
static int	max_conns = 4;

#define FREE_EASY_MAX 256
static CURL *free_easy[FREE_EASY_MAX];
static int	nfree_easy = 0;

/* ------------------------------------------------------------------ */

/* a socket out of our list; the wait set is rebuilt before the next wait */
static void
socket_forget(curl_socket_t fd)
{
	for (int i = 0; i < nsockets; i++)
		if (sockets[i].fd == fd)
		{
			sockets[i] = sockets[nsockets - 1];
			nsockets--;
			sockets_changed = true;
			return;
		}
}

/*
 * socket_cb
 *		curl says what it waits for on a socket.  A kept-alive connection
 *		goes idle (CURL_POLL_REMOVE) at the end of every request and is
 *		wanted again at the next one: it stays in the wait set meanwhile
 *		(rebuilding the set each time cost ~3.5% of an unbatched worker),
 *		watched for reading so that a peer closing it is noticed
 *		(http_wait then drops it from the set).  The set is rebuilt when a
 *		socket is new or closed (closesocket_cb): an fd number is reused by
 *		the next socket opened, and epoll forgets a closed one by itself.
 */
static int
socket_cb(CURL *easy, curl_socket_t s, int what, void *userp, void *socketp)
{
	int			i;
	uint32		ev = 0;

	for (i = 0; i < nsockets; i++)
		if (sockets[i].fd == s)
			break;
	if (what == CURL_POLL_REMOVE)
	{
		if (i < nsockets && !own_fd(s))
			socket_forget(s);	/* not ours: curl may close it without telling us */
		else if (i < nsockets && !sockets[i].idle)
		{
			sockets[i].idle = true;
			sockets[i].what = 0;
			if (sockets[i].pos >= 0 && !sockets_changed)
				ModifyWaitEvent(wes, sockets[i].pos, WL_SOCKET_READABLE, NULL);
		}
		return 0;
	}
	if (i == nsockets)
	{
		if (nsockets == maxsockets)
		{
			maxsockets = maxsockets ? maxsockets * 2 : 32;
			sockets = sockets ?
				repalloc(sockets, sizeof(HttpSocket) * maxsockets) :
				MemoryContextAlloc(TopMemoryContext, sizeof(HttpSocket) * maxsockets);
		}
		sockets[i].fd = s;
		sockets[i].pos = -1;
		sockets[i].what = what;
		sockets[i].idle = false;
		nsockets++;
		sockets_changed = true;
		return 0;
	}
	if (what & CURL_POLL_IN)
		ev |= WL_SOCKET_READABLE;
	if (what & CURL_POLL_OUT)
		ev |= WL_SOCKET_WRITEABLE;
	if ((sockets[i].what != what || sockets[i].idle) &&
		sockets[i].pos >= 0 && !sockets_changed)
		ModifyWaitEvent(wes, sockets[i].pos, ev, NULL);
	sockets[i].idle = false;
	sockets[i].what = what;
	return 0;
}

/* curl closes a socket: it leaves the set (rebuilt before the next wait) */
static int
closesocket_cb(void *clientp, curl_socket_t s)
{
	own_fd_set(s, false);
	socket_forget(s);
	return close(s) == 0 ? 0 : 1;
}

static int
timer_cb(CURLM *m, long timeout_ms, void *userp)
{
	curl_timeout_ms = timeout_ms;
	curl_timer_set_at = GetCurrentTimestamp();
	return 0;
}

/*
 * http_address_allowed
 *		False for loopback, private (RFC 1918, RFC 4193), link-local,
 *		carrier-grade NAT, unspecified and multicast addresses, unless
 *		allow_private.
 */
bool
http_address_allowed(const struct sockaddr *sa, bool allow_private)
{
	if (allow_private)
		return true;
	if (sa->sa_family == AF_INET)
	{
		uint32		a = ntohl(((const struct sockaddr_in *) sa)->sin_addr.s_addr);

		if ((a >> 24) == 0 || (a >> 24) == 10 || (a >> 24) == 127 ||
			(a >> 20) == ((172 << 4) | 1) ||	/* 172.16/12 */
			(a >> 16) == ((192 << 8) | 168) ||	/* 192.168/16 */
			(a >> 16) == ((169 << 8) | 254) ||	/* 169.254/16 */
			(a >> 22) == ((100 << 2) | 1) ||	/* 100.64/10 */
			(a >> 28) >= 14)	/* multicast, reserved, broadcast */
			return false;
		return true;
	}
	if (sa->sa_family == AF_INET6)
	{
		const struct in6_addr *a = &((const struct sockaddr_in6 *) sa)->sin6_addr;

		if (IN6_IS_ADDR_LOOPBACK(a) || IN6_IS_ADDR_UNSPECIFIED(a) ||
			IN6_IS_ADDR_LINKLOCAL(a) || IN6_IS_ADDR_SITELOCAL(a) ||
			IN6_IS_ADDR_MULTICAST(a) ||
			(a->s6_addr[0] & 0xfe) == 0xfc)	/* fc00::/7 */
			return false;
		if (IN6_IS_ADDR_V4MAPPED(a) || IN6_IS_ADDR_V4COMPAT(a))
		{
			struct sockaddr_in v4;

			memset(&v4, 0, sizeof(v4));
			v4.sin_family = AF_INET;
			memcpy(&v4.sin_addr, &a->s6_addr[12], 4);
			return http_address_allowed((struct sockaddr *) &v4, false);
		}
		return true;
	}
	return false;
}

static curl_socket_t
opensocket_cb(void *clientp, curlsocktype purpose, struct curl_sockaddr *addr)
{
	curl_socket_t fd;

	if (!http_address_allowed(&addr->addr, odoo_sync_allow_private_endpoints))
		return CURL_SOCKET_BAD;
	fd = socket(addr->family, addr->socktype, addr->protocol);
	own_fd_set(fd, true);
	return fd;
}

static size_t
write_cb(char *ptr, size_t size, size_t nmemb, void *userdata)
{
	HttpRequest *req = (HttpRequest *) userdata;
	size_t		n = size * nmemb;
	size_t		room = DELIVER_EXCERPT_MAX - req->excerpt_len;

	if (room > 0)
	{
		size_t		c = Min(room, n);

		memcpy(req->excerpt + req->excerpt_len, ptr, c);
		req->excerpt_len += c;
		req->excerpt[req->excerpt_len] = '\0';
	}
	return n;
}

static size_t
header_cb(char *buffer, size_t size, size_t nitems, void *userdata)
{
	HttpRequest *req = (HttpRequest *) userdata;
	size_t		n = size * nitems;

	if (n > 12 && pg_strncasecmp(buffer, "retry-after:", 12) == 0)
	{
		char		val[64];
		size_t		l = Min(n - 12, sizeof(val) - 1);
		char	   *p;
		char	   *end;
		long		secs;

		memcpy(val, buffer + 12, l);
		val[l] = '\0';
		p = val;
		while (*p == ' ' || *p == '\t')
			p++;
		secs = strtol(p, &end, 10);
		if (end != p && (*end == '\0' || *end == '\r' || *end == '\n' || *end == ' '))
			req->retry_after_s = Max(secs, 0);
		else
		{
			/* an HTTP-date */
			time_t		t = curl_getdate(p, NULL);

			if (t > 0)
				req->retry_after_s = Max((long) (t - time(NULL)), 0);
		}
	}
	return n;
}

/*
 * http_init
 *		Creates the multi handle.  max_connections bounds the connection
 *		cache (keep-alive connections kept open).
 */
void
http_init(int max_connections)
{
	if (multi == NULL)
	{
		if (curl_global_init(CURL_GLOBAL_ALL) != CURLE_OK)
			elog(ERROR, "could not initialize libcurl");
		multi = curl_multi_init();
		if (multi == NULL)
			elog(ERROR, "could not create a libcurl multi handle");
		curl_multi_setopt(multi, CURLMOPT_SOCKETFUNCTION, socket_cb);
		curl_multi_setopt(multi, CURLMOPT_TIMERFUNCTION, timer_cb);
		curl_multi_setopt(multi, CURLMOPT_PIPELINING, (long) CURLPIPE_MULTIPLEX);
	}
	max_conns = Max(max_connections, max_conns);
	curl_multi_setopt(multi, CURLMOPT_MAXCONNECTS, (long) max_conns);
}

/*
 * http_drop_connections
 *		Closes every kept-alive connection (when odoo_sync.allow_private_endpoints
 *		is turned off, a reused connection must not bypass the address check).
 *		Waits for the running requests to finish: done at the next
 *		http_start() with nothing running.
 */
static bool drop_pending = false;

void
http_drop_connections(void)
{
	drop_pending = true;
}

static void
drop_now(void)
{
	if (multi == NULL)
		return;
	curl_multi_cleanup(multi);
	multi = NULL;
	nsockets = 0;
	sockets_changed = true;
	curl_timeout_ms = -1;
	while (nfree_easy > 0)
		curl_easy_cleanup(free_easy[--nfree_easy]);
	http_init(max_conns);
	drop_pending = false;
}

/*
 * http_start
 *		Starts a request; its result arrives through http_next_done().
 */
void
http_start(HttpRequest *req)
{
	CURL	   *e;
	CURLMcode	mc;

	if (drop_pending && nrequests == 0)
		drop_now();
	e = nfree_easy > 0 ? free_easy[--nfree_easy] : curl_easy_init();
	if (e == NULL)
		elog(ERROR, "could not create a libcurl handle");
	req->easy = e;
	req->done = false;
	req->result = CURLE_OK;
	req->status = 0;
	req->error[0] = '\0';
	req->excerpt[0] = '\0';
	req->excerpt_len = 0;
	req->retry_after_s = -1;
	req->started_at = GetCurrentTimestamp();

	curl_easy_setopt(e, CURLOPT_URL, req->url);
	curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
	curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 0L);
	curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(e, CURLOPT_POST, 1L);
	curl_easy_setopt(e, CURLOPT_POSTFIELDS, req->body);
	curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t) req->body_len);
	curl_easy_setopt(e, CURLOPT_HTTPHEADER, req->headers);
	curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, req->connect_timeout_ms);
	curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, req->timeout_ms);
	curl_easy_setopt(e, CURLOPT_SSL_VERIFYPEER, req->verify_tls ? 1L : 0L);
	curl_easy_setopt(e, CURLOPT_SSL_VERIFYHOST, req->verify_tls ? 2L : 0L);
	curl_easy_setopt(e, CURLOPT_HTTP_VERSION, (long) CURL_HTTP_VERSION_2TLS);
	curl_easy_setopt(e, CURLOPT_PIPEWAIT, 1L);
	curl_easy_setopt(e, CURLOPT_TCP_NODELAY, 1L);
	curl_easy_setopt(e, CURLOPT_TCP_KEEPALIVE, 1L);
	curl_easy_setopt(e, CURLOPT_ERRORBUFFER, req->error);
	curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, write_cb);
	curl_easy_setopt(e, CURLOPT_WRITEDATA, req);
	curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, header_cb);
	curl_easy_setopt(e, CURLOPT_HEADERDATA, req);
	curl_easy_setopt(e, CURLOPT_OPENSOCKETFUNCTION, opensocket_cb);
	curl_easy_setopt(e, CURLOPT_CLOSESOCKETFUNCTION, closesocket_cb);
	curl_easy_setopt(e, CURLOPT_PRIVATE, req);
	curl_easy_setopt(e, CURLOPT_USERAGENT, "odoo_sync/" ODOO_SYNC_VERSION);
	/* no "Expect: 100-continue" round trip for large batches */
	curl_easy_setopt(e, CURLOPT_EXPECT_100_TIMEOUT_MS, 0L);

	mc = curl_multi_add_handle(multi, e);
	if (mc != CURLM_OK)
		elog(ERROR, "could not start an HTTP request: %s", curl_multi_strerror(mc));
	nrequests++;
}

static bool
socket_idle(curl_socket_t fd)
{
	for (int i = 0; i < nsockets; i++)
		if (sockets[i].fd == fd)
			return sockets[i].idle;
	return false;
}

static void
rebuild_wait_set(void)
{
	if (wes != NULL && wes_size >= nsockets + 2 && !sockets_changed)
		return;
	if (wes != NULL)
		FreeWaitEventSet(wes);
	wes_size = Max(nsockets + 2, 16);
	wes = CreateWaitEventSet(TopMemoryContext, wes_size);
	AddWaitEventToSet(wes, WL_LATCH_SET, PGINVALID_SOCKET, MyLatch, NULL);
	AddWaitEventToSet(wes, WL_EXIT_ON_PM_DEATH, PGINVALID_SOCKET, NULL, NULL);
	for (int i = 0; i < nsockets; i++)
	{
		uint32		ev = 0;

		if (sockets[i].what & CURL_POLL_IN)
			ev |= WL_SOCKET_READABLE;
		if (sockets[i].what & CURL_POLL_OUT)
			ev |= WL_SOCKET_WRITEABLE;
		if (ev == 0)
			ev = WL_SOCKET_READABLE;
		sockets[i].pos = AddWaitEventToSet(wes, ev, sockets[i].fd, NULL, NULL);
	}
	sockets_changed = false;
}

/*
 * http_wait
 *		Waits up to timeout_ms (-1 = forever) for the latch or network
 *		activity, lets curl make progress, and returns WL_LATCH_SET when the
 *		latch was set (not reset here), else 0.
 */
int
http_wait(long timeout_ms)
{
	WaitEvent	events[64];
	int			n;
	int			rc = 0;
	long		t = timeout_ms;

	if (multi == NULL)
		http_init(4);

	if (curl_timeout_ms >= 0)
	{
		long		left = curl_timeout_ms -
			(long) ((GetCurrentTimestamp() - curl_timer_set_at) / 1000);

		left = Max(left, 0);
		if (t < 0 || left < t)
			t = left;
	}
	rebuild_wait_set();
	n = WaitEventSetWait(wes, t, events, lengthof(events), PG_WAIT_EXTENSION);
	for (int i = 0; i < n; i++)
	{
		int			mask = 0;

		if (events[i].events & WL_LATCH_SET)
		{
			rc |= WL_LATCH_SET;
			continue;
		}
		if (events[i].events & WL_SOCKET_READABLE)
			mask |= CURL_CSELECT_IN;
		if (events[i].events & WL_SOCKET_WRITEABLE)
			mask |= CURL_CSELECT_OUT;
		if (mask && socket_idle(events[i].fd))
		{
			/*
			 * An idle kept-alive connection became readable: the peer
			 * closed it (or sent what nobody asked for).  curl finds out
			 * when it next uses or prunes it; out of the set until curl
			 * wants it again, else this would wake every wait.
			 */
			socket_forget(events[i].fd);
			continue;
		}
		if (mask)
			curl_multi_socket_action(multi, events[i].fd, mask, &curl_running);
	}
	if (curl_timeout_ms >= 0 &&
		GetCurrentTimestamp() - curl_timer_set_at >= curl_timeout_ms * 1000)
	{
		curl_timeout_ms = -1;
		curl_multi_socket_action(multi, CURL_SOCKET_TIMEOUT, 0, &curl_running);
	}
	return rc;
}

/*
 * http_kick
 *		Lets curl send the requests just started (it does so when its timer
 *		fires) without waiting: called before the worker turns to the
 *		database, so that the requests travel meanwhile.
 */
void
http_kick(void)
{
	if (multi == NULL || curl_timeout_ms < 0)
		return;
	if (GetCurrentTimestamp() - curl_timer_set_at >= curl_timeout_ms * 1000)
	{
		curl_timeout_ms = -1;
		curl_multi_socket_action(multi, CURL_SOCKET_TIMEOUT, 0, &curl_running);
	}
}

/*
 * http_next_done
 *		Returns a finished request (result filled in) or NULL.  Its easy
 *		handle goes back to the free list.
 */
HttpRequest *
http_next_done(void)
{
	CURLMsg    *msg;
	int			left;

	while ((msg = curl_multi_info_read(multi, &left)) != NULL)
	{
		HttpRequest *req;
		CURL	   *e = msg->easy_handle;

		if (msg->msg != CURLMSG_DONE)
			continue;
		curl_easy_getinfo(e, CURLINFO_PRIVATE, (char **) &req);
		req->result = msg->data.result;
		curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, &req->status);
		if (req->result != CURLE_OK)
		{
			req->status = 0;
			if (req->error[0] == '\0')
				strlcpy(req->error, curl_easy_strerror(req->result),
						sizeof(req->error));
		}
		req->finished_at = GetCurrentTimestamp();
		req->done = true;
		curl_multi_remove_handle(multi, e);
		curl_easy_reset(e);
		if (nfree_easy < FREE_EASY_MAX)
			free_easy[nfree_easy++] = e;
		else
			curl_easy_cleanup(e);
		req->easy = NULL;
		nrequests--;
		return req;
	}
	return NULL;
}

/*
 * http_running
 *		Number of requests started and not yet returned by http_next_done().
 */
int
http_running(void)
{
	return nrequests;
}
