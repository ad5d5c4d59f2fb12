"""Maps the top-level layout onto import packages: core/ and plugins/ hold packages, conf/ is
shipped inside the framework as ``plugformer.conf`` so configs work from a wheel too."""
from setuptools import find_packages, setup

package_dir = {p: f"{root}/{p.replace('.', '/')}" for root in ("core", "plugins") for p in find_packages(root)}
package_dir["plugformer.conf"] = "conf"
setup(packages=sorted(package_dir), package_dir=package_dir)
