"""The one place the SoniqueBay roles get a password from.

    lookup('soniquebay_credential', 'redis', length=32)

returns soniquebay_redis_password when the inventory sets it (Ansible Vault), whatever its value
(the roles' validation names an empty or missing one); otherwise the password kept on the
controller in <soniquebay_credentials_dir>/redis, generated there once (letters and digits, mode
0600) by ansible.builtin.password. soniquebay_credentials_dir defaults to credentials/ next to
playbooks/.
"""

from __future__ import annotations

import posixpath

from ansible.errors import AnsibleError
from ansible.plugins.loader import lookup_loader
from ansible.plugins.lookup import LookupBase

DOCUMENTATION = """
name: soniquebay_credential
short_description: a SoniqueBay password, from the inventory or generated once on the controller
description:
  - Returns soniquebay_<name>_password (dashes as underscores) when it is defined, else the password
    of the file <soniquebay_credentials_dir>/<name> on the controller, generated if missing.
options:
  _terms:
    description: The credential's name (redis, postgresql, flower-admin, flower-viewer).
    required: true
  length:
    description: Length of a generated password.
    type: int
    default: 32
"""


def override_variable(name: str) -> str:
    """The inventory variable setting credential `name` (flower-admin: soniquebay_flower_admin_password)."""
    return f"soniquebay_{name.replace('-', '_')}_password"


def credentials_dir(variables: dict) -> str:
    """soniquebay_credentials_dir, else credentials/ next to playbooks/."""
    given = variables.get("soniquebay_credentials_dir")
    if given:
        return str(given)
    return posixpath.join(posixpath.dirname(variables["playbook_dir"]), "credentials")


class LookupModule(LookupBase):
    def run(self, terms, variables=None, **kwargs):
        variables = variables or {}
        self.set_options(var_options=variables, direct=kwargs)
        if len(terms) != 1:
            raise AnsibleError(f"soniquebay_credential takes one credential name, got {terms!r}")
        name = str(terms[0])
        given = override_variable(name)
        if given in variables:
            return [self._templar.template(variables[given])]
        directory = self._templar.template(credentials_dir(variables))
        password = lookup_loader.get("ansible.builtin.password", loader=self._loader, templar=self._templar)
        length = self.get_option("length")
        return password.run(
            [posixpath.join(directory, name)], variables, chars=["ascii_letters", "digits"], length=length
        )
