#include <cstdio>
int main() { std::puts("gpugrid"); return 0; }
