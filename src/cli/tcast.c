/*
 * tcast.c - main(): the verb table.  Parsing and dispatch, nothing more.
 *
 * Help is generic: `tcast VERB --help`, `tcast VERB -h` and `tcast help
 * VERB` print the verb's usage from this table on stdout and exit 0, for
 * every verb, before the verb sees its arguments (so no verb can mistake
 * "--help" for a key, or act on it).
 */
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "tcast/version.h"

#define GLOBAL_OPTS                                                          \
	"\nEvery verb takes --socket PATH (default $TCAST_SOCKET, else "     \
	"$XDG_RUNTIME_DIR/tcast/daemon.sock)\nand --json (exactly one JSON " \
	"document on stdout, errors included).\n"                            \
	"Exit status: 0 success, 1 runtime error, 2 usage error.\n"
#define REF_HELP                                                              \
	"\nREF is a key, an artifact id (tc2:...), or a unique prefix of an " \
	"id of at least\n4 hex digits, with or without its tc2: (as git "     \
	"takes short commit names).\n"

static const struct cli_verb verbs[] = {
	{ "daemon", cmd_daemon,
	  "start|stop|restart|status|logs|run the store daemon",
	  "tcast daemon start|run [--config FILE.yaml] [--host-memory SIZE]\n"
	  "                       [--io-threads N] [--log-level LEVEL]\n"
	  "                       [--log-file PATH] [--log-format text|json]\n"
	  "                       [--metrics-port PORT] [--set KEY=VALUE]...\n"
	  "       tcast daemon restart [options of start]\n"
	  "       tcast daemon stop [--timeout SECONDS]\n"
	  "       tcast daemon status\n"
	  "       tcast daemon logs [-n LINES] [-f]\n"
	  "\n"
	  "  start         run the daemon in the background; returns once it "
	  "serves\n"
	  "  run           run it in the foreground (systemd, containers)\n"
	  "  restart       stop, then start with the running daemon's "
	  "configuration;\n"
	  "                options given here override it\n"
	  "  stop          SIGTERM, then SIGKILL after --timeout (1..86400, "
	  "default 35);\n"
	  "                says how many artifacts held only in memory it "
	  "drops\n"
	  "  status        pid, memory, configuration; exit 1 when not "
	  "running\n"
	  "  logs          the last LINES (default 50) lines of the log; -f "
	  "follows it\n"
	  "\n"
	  "  SIZE is 8GiB, 512MiB, 1.5G...; LEVEL is error, warn, info or "
	  "debug;\n"
	  "  --set takes any key of the configuration file "
	  "(docs/configuration.md).\n" GLOBAL_OPTS },
	{ "global", cmd_global,
	  "start|stop|status|logs|run the cluster's global store",
	  "tcast global start|run [--config FILE.yaml] [--listen HOST:PORT]\n"
	  "                       [--cluster-secret-file PATH] [--state-dir DIR]\n"
	  "                       [--db PATH] [--log-file PATH] [--log-level LEVEL]\n"
	  "                       [--lease-ms MS] [--tls on|off|auto]\n"
	  "                       [--tls-cert PEM] [--tls-key PEM] [--tls-ca PEM]\n"
	  "                       [--tls-verify-name on|off] [--set KEY=VALUE]...\n"
	  "       tcast global stop [--state-dir DIR] [--timeout SECONDS]\n"
	  "       tcast global status [--global HOST:PORT] [--cluster-secret-file PATH]\n"
	  "       tcast global resolve KEY|ID [--global HOST:PORT] [--max N]\n"
	  "                                    [--via-daemon]\n"
	  "       tcast global key-set KEY ID [--expect GEN] [--global HOST:PORT]\n"
	  "       tcast global logs [--state-dir DIR]\n"
	  "       tcast global group create GROUP --ranks N [--timeout-ms MS]\n"
	  "       tcast global group join|hold GROUP --rank R [--node NAME]\n"
	  "                                   [--rank-lease-ms MS] [--ranks N]\n"
	  "       tcast global group prepare GROUP --rank R --id ID\n"
	  "       tcast global group abort GROUP [--rank R] [--reason TEXT]\n"
	  "       tcast global group status GROUP [--wait-ms MS]\n"
	  "       (every group verb: [--via-daemon] instead of --global)\n"
	  "\n"
	  "  start         run the global store in the background; returns once "
	  "it listens\n"
	  "  run           run it in the foreground\n"
	  "  status        nodes, leases, artifacts, replicas per node and tier\n"
	  "  resolve       a key or artifact id to its id and ranked sources;\n"
	  "                --via-daemon asks the local daemon (--socket), which asks\n"
	  "                the global store for this node\n"
	  "  key-set       point KEY at ID in the global store, acknowledged once\n"
	  "                committed; --expect GEN moves it only from that\n"
	  "                generation (0: create it only if it does not exist)\n"
	  "  group         ranks that commit or abort together: create it (N\n"
	  "                ranks, a deadline), join each rank with its node and a\n"
	  "                lease (hold: join and renew until stdin closes), report\n"
	  "                prepared; the store commits when all are, aborts on an\n"
	  "                abort, the deadline, a lapsed rank or node lease;\n"
	  "                status --wait-ms waits for the decision;\n"
	  "                --via-daemon sends each through the local daemon\n"
	  "                (no secret here; hold then ties the rank to the\n"
	  "                daemon's node and lasts while its connection does)\n"
	  "\n"
	  "  The config file takes listen, cluster_secret_file, state_dir, db,\n"
	  "  log_file, log_level, lease_ms, heartbeat_ms, durability, tls,\n"
	  "  tls_cert, tls_key, tls_ca (docs/cluster.md); every verb that "
	  "connects\n  takes the same --config and --tls* flags (TLS: "
	  "docs/peer.md).\n" GLOBAL_OPTS },
	{ "import", cmd_import, "import a safetensors file or folder",
	  "tcast import PATH [--key KEY] [--policy cache|warm|pinned]\n"
	  "                  [--expect GEN] [--device cuda:N]\n"
	  "\n"
	  "  --key KEY      publish the artifact under KEY\n"
	  "  --policy P     eviction policy (default cache)\n"
	  "  --expect GEN   move KEY only if it is at generation GEN "
	  "(0: must not exist)\n"
	  "  --device D     load straight into a GPU: cuda, cuda:N or N\n"
	  "\n"
	  "Prints the artifact id on stdout; size, time and rate on "
	  "stderr.\n" GLOBAL_OPTS },
	{ "ls", cmd_ls, "list artifacts", "tcast ls\n" GLOBAL_OPTS },
	{ "inspect", cmd_inspect, "show an artifact's tensors and digest",
	  "tcast inspect REF [--view SPEC [--keep] [--device cuda:N]]\n"
	  "\n"
	  "  --view SPEC    plan a view (JSON, docs/formats.md \"Views\"): its\n"
	  "                 id, table, and bytes read against the artifact\n"
	  "  --keep         make the daemon keep the view under its id\n"
	  "  --device D     keep it on a GPU too: cuda, cuda:N or N\n"
	  "\n"
	  "e.g. --view '{\"slices\": {\"w\": [[0, 0, 512]]}, \"dtype\": "
	  "\"F32\"}'\n" REF_HELP GLOBAL_OPTS },
	{ "rm", cmd_rm, "remove a key or an artifact",
	  "tcast rm REF...\n"
	  "\n"
	  "A key is removed with its artifact unless another key names it; "
	  "an id\nremoves the artifact and leaves its keys pointing at "
	  "nothing.\n" REF_HELP GLOBAL_OPTS },
	{ "keys", cmd_keys, "list keys, show history, or set a key (CAS)",
	  "tcast keys [KEY]\n"
	  "       tcast keys set KEY REF [--expect GEN]\n"
	  "\n"
	  "  keys           every key, its artifact and generation\n"
	  "  keys KEY       one key and its history (times in UTC)\n"
	  "  keys set       point KEY at an artifact; --expect GEN moves "
	  "it only if\n"
	  "                 it is at generation GEN (compare-and-swap)\n" REF_HELP
		  GLOBAL_OPTS },
	{ "export", cmd_export, "write an artifact to a safetensors file",
	  "tcast export REF OUT.safetensors|- [--force]\n"
	  "\n"
	  "Writes the file atomically (a fresh temporary file, fsync, rename; "
	  "mode\n0666 & ~umask); '-' writes the bytes to stdout, which must "
	  "not be a\nterminal.  An existing regular file is replaced only "
	  "with --force (-f);\na FIFO, device, folder or symlink never.\n" REF_HELP
		  GLOBAL_OPTS },
	{ "verify", cmd_verify, "validate a safetensors file or folder",
	  "tcast verify [--] PATH...\n"
	  "\n"
	  "Check safetensors files and model folders (index and shards, "
	  "Hugging Face\ncache snapshots) without loading tensor data.  "
	  "With --json: one document,\n{\"valid\": BOOL, \"results\": "
	  "[one object per PATH]}.\n"
	  "Exit status: 0 all valid, 1 any invalid, 2 usage error.\n" },
	{ "pull", cmd_pull, "pull an artifact from peer daemons",
	  "tcast pull REF [--from HOST:PORT]...\n"
	  "                [--streams N] [--timeout-ms MS] [--secret-file PATH]\n"
	  "                [--key KEY | --no-key] [--policy cache|warm|pinned]\n"
	  "                [--device cuda:N [--host-copy]] [--view SPEC]\n"
	  "                [--tls on|off|auto] [--tls-cert PEM] [--tls-key PEM]\n"
	  "                [--tls-ca PEM] [--tls-verify-name on|off]\n"
	  "\n"
	  "Pull an artifact (by key or full id) from the peer servers of "
	  "other\ndaemons (their peer_listen) into this node's daemon as a "
	  "host replica.\nSources: each --from, else (a daemon in a cluster) "
	  "the global store's\nranked host and GPU replicas on other nodes.  "
	  "Chunks are striped over\nevery source, N streams each (default: 8 "
	  "per usable CPU over all sources,\n1 to 4 each; a lone source one per "
	  "2 CPUs, 4 to 8), and each is checked\nagainst its digest; a bad or "
	  "missing chunk comes from another source.  A key\npulled is published "
	  "here under the same key.\nThe cluster secret is "
	  "--secret-file, else $TCAST_CLUSTER_SECRET_FILE, else\nthe local "
	  "daemon's cluster_secret_file.\nTLS: the daemon's tls_cert, tls_key, "
	  "tls_ca and tls, each overridden by\nits --tls* flag.  --device "
	  "pulls into a replica on that GPU instead (the\ndaemon's, through "
	  "pinned staging, each chunk verified before it is copied;\nno host "
	  "replica); with --host-copy the host replica is made first and the\n"
	  "GPU replica from it.  Prints the id; per source bytes and rate on "
	  "stderr\n(--json: one document).\n"
	  "--view SPEC (JSON, as 'tcast inspect --view'): pull only the "
	  "chunks that\ncover the view's byte ranges (each verified); the "
	  "daemon keeps the view\nas an artifact of its own under the view "
	  "id.  Prints the kept view's id;\n--json adds bytes_pulled, "
	  "chunks_pulled, artifact_bytes, view_id.\n" GLOBAL_OPTS },
	{ "status", cmd_status, "same as 'daemon status'",
	  "tcast status\n"
	  "\n"
	  "The daemon's pid, memory, artifacts and configuration; exit 1 "
	  "when no\ndaemon is running (as 'tcast daemon status').\n" GLOBAL_OPTS },
	{ "doctor", cmd_doctor, "check what tcast needs on this machine",
	  "tcast doctor [--json]\n"
	  "\n"
	  "One line per check (memfd seals, io_uring, ulimit -l, the CUDA "
	  "driver and\nVMM per GPU, the socket directory, free memory) with "
	  "ok, warn or fail and\nwhat to do.  Exit status: 0 when nothing "
	  "failed, 1 otherwise.\n" GLOBAL_OPTS },
};

#define NVERBS (sizeof(verbs) / sizeof(verbs[0]))

static int usage(FILE *f)
{
	if (cli.json && f == stdout) {
		json_t *a = json_array();

		for (size_t i = 0; i < NVERBS; i++)
			json_array_append_new(a, json_pack("{s:s, s:s}", "verb",
							   verbs[i].name,
							   "summary",
							   verbs[i].summary));
		cli_put_json(json_pack("{s:o}", "verbs", a));
		return 0;
	}
	fprintf(f, "usage: tcast [--socket PATH] [--json] <verb> [args]\n\n");
	for (size_t i = 0; i < NVERBS; i++)
		fprintf(f, "  %-8s %s\n", verbs[i].name, verbs[i].summary);
	fprintf(f, "\n'tcast help VERB' or 'tcast VERB --help' for a verb's "
		   "options; man tcast(1).\n"
		   "Exit status: 0 success, 1 runtime error, 2 usage error.\n");
	return f == stdout ? 0 : EXIT_USAGE;
}

static const struct cli_verb *find_verb(const char *name)
{
	for (size_t i = 0; i < NVERBS; i++)
		if (!strcmp(name, verbs[i].name))
			return &verbs[i];
	return NULL;
}

static void verb_help(const struct cli_verb *v)
{
	if (cli.json)
		cli_put_json(json_pack("{s:s, s:s, s:s}", "verb", v->name,
				       "summary", v->summary, "usage",
				       v->usage ? v->usage : ""));
	else if (v->usage)
		cli_print_usage(v, stdout);
	else
		printf("usage: tcast %s\n\n%s\n", v->name, v->summary);
}

/* True when the verb's arguments ask for help (before any "--"). */
static int wants_help(int argc, char **argv)
{
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--"))
			return 0;
		if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h"))
			return 1;
	}
	return 0;
}

int main(int argc, char **argv)
{
	const struct cli_verb *v;

	argc = cli_take_global(argc, argv);
	if (argc < 0)
		return EXIT_USAGE;
	if (argc < 2)
		return usage(stderr);
	if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h"))
		return usage(stdout);
	if (!strcmp(argv[1], "help")) {
		if (argc < 3)
			return usage(stdout);
		v = find_verb(argv[2]);
		if (!v || argc > 3)
			return cli_usage_error("help: no verb '%s'",
					       cli_esc(argv[2]));
		verb_help(v);
		return 0;
	}
	if (!strcmp(argv[1], "--version") || !strcmp(argv[1], "version")) {
		printf("tcast %s\n", tc_version());
		return 0;
	}
	v = find_verb(argv[1]);
	if (!v) {
		cli_usage_error("unknown verb '%s'", cli_esc(argv[1]));
		return usage(stderr);
	}
	cli.verb = v;
	if (wants_help(argc - 1, argv + 1)) {
		verb_help(v);
		return 0;
	}
	return v->fn(argc - 1, argv + 1);
}
