#include <stdio.h>
#include "tcast/version.h"
int main(void) { puts(tc_version()); return 0; }
