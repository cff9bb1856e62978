/*
 * cmd_verify.h - `tcast verify`: check safetensors files and model folders.
 */
#ifndef TC_CMD_VERIFY_H
#define TC_CMD_VERIFY_H

/* `tcast verify [--json] PATH...`; argv[0] is the verb.  Prints one line
 * per path on stdout (the summary, or with --json one JSON object) and
 * "error: <TC_NAME>: <message>" on stderr for each failure.  Returns the
 * exit status: 0 all valid, 1 any invalid, 2 usage error. */
int cmd_verify(int argc, char **argv);

#endif /* TC_CMD_VERIFY_H */
