# The R ldbounds bounds of group_sequential.json (2026-12-01): R 4.2.2 (Debian r-base-core),
# ldbounds 2.0.2 installed from its source (CRAN mirror cran/ldbounds, a17e5687) with
#   R CMD INSTALL -l LIB ldbounds
# Run: Rscript group_sequential_ldbounds.R  (after setting lib.loc to LIB)
library(ldbounds, lib.loc = Sys.getenv("LDBOUNDS_LIB", unset = .libPaths()[1]))
options(digits = 10)
show <- function(t, iuse = 1, phi = 1) {
  b <- ldBounds(t = t, iuse = iuse, phi = phi, alpha = 0.05, sides = 2)
  cat(sprintf("t=%s iuse=%d phi=%g\n upper=%s\n exit.pr=%s\n", paste(t, collapse=","), iuse, phi,
      paste(sprintf("%.6f", b$upper.bounds), collapse=", "), paste(sprintf("%.8f", b$exit.pr), collapse=", ")))
}
show(seq(0.2, 1, 0.2))
show(c(0.5, 1))
show(c(0.13, 0.37, 0.52, 0.9, 1.0))
show(seq(0.1, 1, 0.1))
show(c(1/3, 2/3, 1), iuse = 3, phi = 1)
show(c(0.2, 0.45, 0.7, 1.0), iuse = 3, phi = 1)
show(c(0.05, 0.3, 0.61, 0.8), iuse = 3, phi = 2.5)
show(seq(0.2, 1, 0.2), iuse = 3, phi = 2)
