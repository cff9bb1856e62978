/*
 * device.c - GPU identities in text: the nvidia-smi UUID form.  No driver
 * call: usable before (or without) the driver.
 */
#include <stdio.h>
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
