/*
 * tcast.c - main(): the verb table.  Parsing and dispatch, nothing more.
 */
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "tcast/version.h"

static const struct {
	const char *name;
	int (*fn)(int argc, char **argv);
	const char *help;
} verbs[] = {
	{ "daemon", cmd_daemon, "start|stop|status|logs|run the store daemon" },
	{ "import", cmd_import, "import a safetensors file or folder" },
	{ "ls", cmd_ls, "list artifacts" },
	{ "inspect", cmd_inspect, "show an artifact's tensors and digest" },
	{ "rm", cmd_rm, "remove a key or an artifact" },
	{ "keys", cmd_keys, "list keys, show history, or set a key (CAS)" },
	{ "export", cmd_export, "write an artifact to a safetensors file" },
	{ "verify", cmd_verify, "validate a safetensors file or folder" },
	{ "status", cmd_status, "same as 'daemon status'" },
	{ "doctor", cmd_doctor, "check what tcast needs on this machine" },
};

static int usage(FILE *f)
{
	fprintf(f, "usage: tcast [--socket PATH] [--json] <verb> [args]\n\n");
	for (size_t i = 0; i < sizeof(verbs) / sizeof(verbs[0]); i++)
		fprintf(f, "  %-8s %s\n", verbs[i].name, verbs[i].help);
	fprintf(f, "\n'tcast <verb> --help' for a verb's options; "
		   "man tcast(1).\n");
	return f == stdout ? 0 : EXIT_USAGE;
}

int main(int argc, char **argv)
{
	argc = cli_take_global(argc, argv);
	if (argc < 2)
		return usage(stderr);
	if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") ||
	    !strcmp(argv[1], "help"))
		return usage(stdout);
	if (!strcmp(argv[1], "--version") || !strcmp(argv[1], "version")) {
		printf("tcast %s\n", tc_version());
		return 0;
	}
	for (size_t i = 0; i < sizeof(verbs) / sizeof(verbs[0]); i++)
		if (!strcmp(argv[1], verbs[i].name))
			return verbs[i].fn(argc - 1, argv + 1);
	fprintf(stderr, "tcast: unknown verb '%s'\n", argv[1]);
	return usage(stderr);
}
