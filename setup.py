"Package setup: metadata and dependencies come from settings.ini (classic nbdev layout)."
from configparser import ConfigParser
import setuptools, shlex

config = ConfigParser(delimiters=['='])
config.read('settings.ini', encoding='utf-8')
cfg = config['DEFAULT']

cfg_keys = 'version description keywords author author_email'.split()
expected = cfg_keys + "lib_name user branch license status min_python audience language".split()
for o in expected: assert o in cfg, "missing expected setting: {}".format(o)
setup_cfg = {o:cfg[o] for o in cfg_keys}

licenses = {'apache2': 'Apache-2.0'}  # SPDX expression (license classifiers are deprecated)
statuses = ['1 - Planning', '2 - Pre-Alpha', '3 - Alpha', '4 - Beta', '5 - Production/Stable', '6 - Mature', '7 - Inactive']
py_versions = '3.10 3.11 3.12 3.13'.split()

requirements = shlex.split(cfg.get('requirements', ''))
dev_requirements = shlex.split(cfg.get('dev_requirements', ''))
extras = {'dev': dev_requirements,
          'onnx': shlex.split(cfg.get('onnx_requirements', '')),
          'timm': shlex.split(cfg.get('timm_requirements', '')),
          'smp': shlex.split(cfg.get('smp_requirements', '')),
          'distributed': shlex.split(cfg.get('distributed_requirements', '')),
          'widgets': shlex.split(cfg.get('widgets_requirements', ''))}
lic = licenses.get(cfg['license'], cfg['license'])
min_python = cfg['min_python']
scripts = [o.strip() for o in cfg.get('console_scripts', '').split() if o.strip()]
package_data = cfg.get('package_data', '').split()

setuptools.setup(
    name = cfg['lib_name'],
    license = lic,
    classifiers = [
        'Development Status :: ' + statuses[int(cfg['status']) - 1],
        'Intended Audience :: ' + cfg['audience'].title(),
        'Natural Language :: ' + cfg['language'].title(),
    ] + ['Programming Language :: Python :: '+o for o in py_versions[py_versions.index(min_python):]],
    packages = setuptools.find_packages(include=[cfg['lib_name'], cfg['lib_name'] + '.*']),
    package_data = {cfg['lib_name']: package_data},
    include_package_data = True,
    install_requires = requirements,
    extras_require = extras,
    python_requires = '>=' + cfg['min_python'],
    long_description = open('README.md', encoding='utf-8').read(),
    long_description_content_type = 'text/markdown',
    zip_safe = False,
    entry_points = {
        'console_scripts': scripts,
        'nbdev': [f'{cfg.get("lib_path")}={cfg.get("lib_path")}._modidx:d'],
    },
    **setup_cfg)
