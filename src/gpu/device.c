/*
 * device.c - GPU identities in text: the nvidia-smi UUID form.  No driver
 * call: usable before (or without) the driver.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "tcast/errors.h"
#include "device.h"

void tc__gpu_uuid_format(const uint8_t u[TC_GPU_UUID_BYTES],
			 char out[TC_GPU_UUID_STRLEN])
{
	snprintf(out, TC_GPU_UUID_STRLEN,
		 "GPU-%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-"
		 "%02x%02x%02x%02x%02x%02x",
		 u[0], u[1], u[2], u[3], u[4], u[5], u[6], u[7], u[8], u[9],
		 u[10], u[11], u[12], u[13], u[14], u[15]);
}

static int hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

int tc__gpu_uuid_parse(const char *s, uint8_t out[TC_GPU_UUID_BYTES])
{
	uint8_t u[TC_GPU_UUID_BYTES];
	int nib = 0;

	if (!strncasecmp(s, "GPU-", 4) || !strncasecmp(s, "MIG-", 4))
		s += 4;
	if (strlen(s) != 36)
		return TC_EINVAL;
	for (int i = 0; i < 36; i++) {
		int v;

		if (i == 8 || i == 13 || i == 18 || i == 23) {
			if (s[i] != '-')
				return TC_EINVAL;
			continue;
		}
		v = hexval(s[i]);
		if (v < 0)
			return TC_EINVAL;
		if (nib % 2 == 0)
			u[nib / 2] = (uint8_t)(v << 4);
		else
			u[nib / 2] |= (uint8_t)v;
		nib++;
	}
	memcpy(out, u, sizeof(u));
	return 0;
}

static const char *const ref_vars[] = { "CUDA_VISIBLE_DEVICES",
					"CUDA_DEVICE_ORDER", "TCAST_CUDA_LIB" };

/* The environment part of this process's ref ("|VAR=value|VAR!..."). */
static int ref_env(char *out, size_t outlen)
{
	size_t off = 0;

	out[0] = '\0';
	for (size_t i = 0; i < sizeof(ref_vars) / sizeof(ref_vars[0]); i++) {
		const char *v = getenv(ref_vars[i]);
		int k;

		if (v && strchr(v, '|'))
			return TC_EINVAL;
		k = v ? snprintf(out + off, outlen - off, "|%s=%s", ref_vars[i],
				 v) :
			snprintf(out + off, outlen - off, "|%s!", ref_vars[i]);
		if (k < 0 || (size_t)k >= outlen - off)
			return TC_EINVAL;
		off += (size_t)k;
	}
	return 0;
}

int tc__gpu_ordinal_ref(int ordinal, char *out, size_t outlen)
{
	char env[TC_GPU_REF_MAX];
	int k;

	if (ordinal < 0 || ref_env(env, sizeof(env)) < 0)
		return TC_EINVAL;
	k = snprintf(out, outlen, "cuda:%d%s", ordinal, env);
	return k < 0 || (size_t)k >= outlen ? TC_EINVAL : 0;
}

int tc__gpu_ordinal_ref_parse(const char *s, int *ordinal, bool *same_env)
{
	char env[TC_GPU_REF_MAX];
	long n = 0;
	const char *p;

	if (strncmp(s, "cuda:", 5))
		return 0;
	p = s + 5;
	if (*p < '0' || *p > '9')
		return TC_EINVAL;
	while (*p >= '0' && *p <= '9') {
		n = n * 10 + (*p++ - '0');
		if (n > 65535)
			return TC_EINVAL;
	}
	if (*p && *p != '|')
		return TC_EINVAL;
	*ordinal = (int)n;
	*same_env = ref_env(env, sizeof(env)) == 0 && !strcmp(p, env);
	return 1;
}
