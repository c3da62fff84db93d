#!/usr/bin/env python3
"""Generate the netpol-e2e test corpus for `podwall test`.

Every case below is a transcription of one `f.It(...)` from the upstream Kubernetes
e2e suite, test/e2e/network/netpol/network_policy.go, pinned at
kubernetes/kubernetes@9db638c0807a720aa050ebcef69c32e4d4cce280 (the 3x3 "x,y,z / a,b,c"
model), together with its helpers (policies.go, reachability.go, truthtable.go,
model.go, test_helper.go, kubemanager.go).

The Go test builds NetworkPolicy objects with GenNetworkPolicy* / SetSpec*Rules and
states its expectations with a Reachability truth table (NewReachability, Expect,
ExpectAllIngress, ExpectAllEgress, ExpectPeer). The functions below keep the Go
names and the Go statement order, so that each case can be read side by side with
the upstream code. Running the script:

  * writes cluster.yaml (the upstream model as a `kubectl get -o yaml` List),
  * writes one folder per case (per stage, per IP family where that matters) with
    policies.yaml, probes.yaml and case.yaml (plus cluster.yaml when labels differ),
  * cross-checks every expectation against a small independent NetworkPolicy
    evaluator (see `evaluate`) and exits non-zero on any disagreement.

    python3 gen.py            # regenerate everything (deterministic)
    python3 gen.py --no-check # skip the cross-check

Only the Python standard library and PyYAML are needed.
"""

import copy
import ipaddress
import os
import re
import shutil
import sys
import uuid

import yaml

HERE = os.path.dirname(os.path.abspath(__file__))
UPSTREAM_REPO = "kubernetes/kubernetes"
UPSTREAM_COMMIT = "9db638c0807a720aa050ebcef69c32e4d4cce280"
UPSTREAM_FILE = "test/e2e/network/netpol/network_policy.go"

# ---------------------------------------------------------------------------
# The model (model.go: NewModel(namespaces, ["a","b","c"], ports, protocols)).
# Upstream creates only the ports/protocols a test needs; we always create all of
# them (ports 80, 81 x TCP, UDP, SCTP). Extra containers do not change any
# expectation: every probe targets a port/protocol the upstream test also serves.
# ---------------------------------------------------------------------------

NAMESPACES = ["x", "y", "z"]
POD_NAMES = ["a", "b", "c"]
PORTS = [80, 81]
PROTOCOLS = ["TCP", "UDP", "SCTP"]

# network_policy.go: namespaceLabelKey = "kubernetes.io/metadata.name" (== v1.LabelMetadataName).
namespaceLabelKey = "kubernetes.io/metadata.name"

AGNHOST = "registry.k8s.io/e2e-test-images/agnhost:2.53"
TIMESTAMP = "2024-01-01T00:00:00Z"
NODE_NAME = "node-1"
HOST_IPS = ["172.18.0.2", "fc00:f853:ccd:e793::2"]
UID_NAMESPACE = uuid.UUID("6f1d7c2e-5b8a-4c3e-9d4f-0a1b2c3d4e5f")

IPV4 = "IPv4"
IPV6 = "IPv6"


def pod_ip(ns, pod, family):
    """The IP scheme: namespace index N (x=1, y=2, z=3), pod index P (a=1, b=2, c=3).

    IPv4 10.0.N.P (inside 10.0.0.0/16), IPv6 fd00::N:P (inside fd00::/64).
    status.podIP is the IPv4 address; status.podIPs lists IPv4 then IPv6.
    """
    n = NAMESPACES.index(ns) + 1
    p = POD_NAMES.index(pod) + 1
    if family == IPV4:
        return f"10.0.{n}.{p}"
    return f"fd00::{n}:{p}"


def all_pod_strings():
    return [f"{ns}/{pod}" for ns in NAMESPACES for pod in POD_NAMES]


# ---------------------------------------------------------------------------
# Cluster state and its rendering (`kubectl get namespaces,pods -o yaml`).
# ---------------------------------------------------------------------------


class ClusterState:
    def __init__(self):
        # kubemanager.go (older revisions) labelled each namespace ns=<name>; the API server
        # adds kubernetes.io/metadata.name=<name>. We carry both.
        self.ns_labels = {ns: {"ns": ns, namespaceLabelKey: ns} for ns in NAMESPACES}
        # model.go: Pod.Labels() == {"pod": <name>}
        self.pod_labels = {(ns, pod): {"pod": pod} for ns in NAMESPACES for pod in POD_NAMES}

    def key(self):
        return (
            tuple(sorted((ns, tuple(sorted(l.items()))) for ns, l in self.ns_labels.items())),
            tuple(sorted((k, tuple(sorted(l.items()))) for k, l in self.pod_labels.items())),
        )


def _uid(kind, name):
    return str(uuid.uuid5(UID_NAMESPACE, f"{kind}/{name}"))


def _container(port, protocol):
    # model.go: Container.Name() "cont-%d-%s", PortName() "serve-%d-%s" (lower-case protocol),
    # Spec(): agnhost serve-hostname for TCP/UDP, agnhost porter + SERVE_SCTP_PORT_<port> for SCTP.
    proto = protocol.lower()
    c = {
        "image": AGNHOST,
        "imagePullPolicy": "IfNotPresent",
        "name": f"cont-{port}-{proto}",
        "ports": [{"containerPort": port, "name": f"serve-{port}-{proto}", "protocol": protocol}],
        "resources": {},
        "securityContext": {},
        "terminationMessagePath": "/dev/termination-log",
        "terminationMessagePolicy": "File",
    }
    if protocol == "TCP":
        c["command"] = ["/agnhost", "serve-hostname", "--tcp", "--http=false", "--port", str(port)]
    elif protocol == "UDP":
        c["command"] = ["/agnhost", "serve-hostname", "--udp", "--http=false", "--port", str(port)]
    else:
        c["command"] = ["/agnhost", "porter"]
        c["env"] = [{"name": f"SERVE_SCTP_PORT_{port}", "value": "foo"}]
    return c


def _container_status(ns, pod, port, protocol):
    name = f"cont-{port}-{protocol.lower()}"
    return {
        "containerID": "containerd://" + uuid.uuid5(UID_NAMESPACE, f"container/{ns}/{pod}/{name}").hex * 2,
        "image": AGNHOST,
        "imageID": AGNHOST.rsplit(":", 1)[0] + "@sha256:" + uuid.uuid5(UID_NAMESPACE, "agnhost").hex * 2,
        "lastState": {},
        "name": name,
        "ready": True,
        "restartCount": 0,
        "started": True,
        "state": {"running": {"startedAt": TIMESTAMP}},
    }


def _namespace_object(ns, labels, rv):
    return {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {
            "creationTimestamp": TIMESTAMP,
            "labels": dict(labels),
            "name": ns,
            "resourceVersion": str(rv),
            "uid": _uid("Namespace", ns),
        },
        "spec": {"finalizers": ["kubernetes"]},
        "status": {"phase": "Active"},
    }


def _pod_object(ns, pod, labels, rv):
    containers = [_container(port, proto) for port in PORTS for proto in PROTOCOLS]
    conditions = [
        {"lastProbeTime": None, "lastTransitionTime": TIMESTAMP, "status": "True", "type": t}
        for t in ["PodReadyToStartContainers", "Initialized", "Ready", "ContainersReady", "PodScheduled"]
    ]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "creationTimestamp": TIMESTAMP,
            "labels": dict(labels),
            "name": pod,
            "namespace": ns,
            "resourceVersion": str(rv),
            "uid": _uid("Pod", f"{ns}/{pod}"),
        },
        "spec": {
            "containers": containers,
            "dnsPolicy": "ClusterFirst",
            "enableServiceLinks": True,
            "nodeName": NODE_NAME,
            "preemptionPolicy": "PreemptLowerPriority",
            "priority": 0,
            "restartPolicy": "Always",
            "schedulerName": "default-scheduler",
            "securityContext": {},
            "serviceAccount": "default",
            "serviceAccountName": "default",
            "terminationGracePeriodSeconds": 0,
            "tolerations": [
                {"effect": "NoExecute", "key": "node.kubernetes.io/not-ready", "operator": "Exists", "tolerationSeconds": 300},
                {"effect": "NoExecute", "key": "node.kubernetes.io/unreachable", "operator": "Exists", "tolerationSeconds": 300},
            ],
        },
        "status": {
            "conditions": conditions,
            "containerStatuses": [_container_status(ns, pod, port, proto) for port in PORTS for proto in PROTOCOLS],
            "hostIP": HOST_IPS[0],
            "hostIPs": [{"ip": ip} for ip in HOST_IPS],
            "phase": "Running",
            "podIP": pod_ip(ns, pod, IPV4),
            "podIPs": [{"ip": pod_ip(ns, pod, IPV4)}, {"ip": pod_ip(ns, pod, IPV6)}],
            "qosClass": "BestEffort",
            "startTime": TIMESTAMP,
        },
    }


class KubectlDumper(yaml.SafeDumper):
    """Like kubectl -o yaml (go-yaml): strings that need quoting get double quotes."""

    def choose_scalar_style(self):
        style = super().choose_scalar_style()
        return '"' if style == "'" else style


def render_cluster(state, header):
    base = ClusterState()
    items = []
    rv = 1000
    for ns in NAMESPACES:
        rv += 1
        # an object whose labels were changed mid-test gets a later resourceVersion, as it would
        bump = 500 if state.ns_labels[ns] != base.ns_labels[ns] else 0
        items.append(_namespace_object(ns, state.ns_labels[ns], rv + bump))
    for ns in NAMESPACES:
        for pod in POD_NAMES:
            rv += 1
            bump = 500 if state.pod_labels[(ns, pod)] != base.pod_labels[(ns, pod)] else 0
            items.append(_pod_object(ns, pod, state.pod_labels[(ns, pod)], rv + bump))
    doc = {"apiVersion": "v1", "items": items, "kind": "List", "metadata": {"resourceVersion": ""}}
    # kubectl -o yaml: keys sorted, block style, sequences not indented under their key.
    return header + yaml.dump(doc, Dumper=KubectlDumper, sort_keys=True, default_flow_style=False, width=1000)


# ---------------------------------------------------------------------------
# policies.go / Go API types, with Go field order and Go JSON `omitempty` behaviour.
# A nil pointer is None (omitted); an empty selector struct is {} (kept).
# ---------------------------------------------------------------------------


def LabelSelector(MatchLabels=None, MatchExpressions=None):
    sel = {}
    if MatchLabels:  # map, omitempty: an empty map is not serialised
        sel["matchLabels"] = dict(MatchLabels)
    if MatchExpressions:
        sel["matchExpressions"] = [dict(e) for e in MatchExpressions]
    return sel


def LabelSelectorRequirement(Key, Operator, Values=None):
    r = {"key": Key, "operator": Operator}
    if Values:
        r["values"] = list(Values)
    return r


LabelSelectorOpIn = "In"
LabelSelectorOpNotIn = "NotIn"


def NetworkPolicyPeer(PodSelector=None, NamespaceSelector=None, IPBlock=None):
    p = {}
    if PodSelector is not None:
        p["podSelector"] = PodSelector
    if NamespaceSelector is not None:
        p["namespaceSelector"] = NamespaceSelector
    if IPBlock is not None:
        p["ipBlock"] = IPBlock
    return p


def IPBlockOf(CIDR, Except=None):
    b = {"cidr": CIDR}
    if Except:
        b["except"] = list(Except)
    return b


def NetworkPolicyPort(Port=None, Protocol=None, EndPort=None):
    # Port: int (intstr.Int) or str (intstr.String, a named port). Protocol nil is defaulted
    # to TCP by the API server; we keep it unset, exactly as the test builds the object.
    p = {}
    if Protocol is not None:
        p["protocol"] = Protocol
    if Port is not None:
        p["port"] = Port
    if EndPort is not None:
        p["endPort"] = EndPort
    return p


def NetworkPolicyIngressRule(From=None, Ports=None):
    r = {}
    if Ports:
        r["ports"] = list(Ports)
    if From:
        r["from"] = list(From)
    return r


def NetworkPolicyEgressRule(To=None, Ports=None):
    r = {}
    if Ports:
        r["ports"] = list(Ports)
    if To:
        r["to"] = list(To)
    return r


protocolTCP, protocolUDP, protocolSCTP = "TCP", "UDP", "SCTP"
PolicyTypeIngress, PolicyTypeEgress = "Ingress", "Egress"


def GenNetworkPolicy(*fns):
    policy = {"metadata": {}, "spec": {"podSelector": {}, "ingress": None, "egress": None, "policyTypes": None}}
    for f in fns:
        f(policy)
    return policy


def GenNetworkPolicyWithNameAndPodMatchLabel(name, targetLabels, *otherFunc):
    return GenNetworkPolicy(*otherFunc, SetObjectMetaName(name), SetSpecPodSelectorMatchLabels(targetLabels))


def GenNetworkPolicyWithNameAndPodSelector(name, targetSelector, *otherFunc):
    return GenNetworkPolicy(*otherFunc, SetObjectMetaName(name), SetSpecPodSelector(targetSelector))


def SetObjectMetaName(name):
    def f(policy):
        policy["metadata"]["name"] = name
    return f


def SetSpecPodSelector(targetSelector):
    def f(policy):
        policy["spec"]["podSelector"] = copy.deepcopy(targetSelector)
    return f


def SetSpecPodSelectorMatchLabels(targetLabels):
    def f(policy):
        policy["spec"]["podSelector"] = LabelSelector(MatchLabels=targetLabels)
    return f


def SetSpecIngressRules(*rules):
    def f(policy):
        spec = policy["spec"]
        if spec["ingress"] is None:
            spec["ingress"] = []
            spec["policyTypes"] = (spec["policyTypes"] or []) + [PolicyTypeIngress]
        spec["ingress"].extend(copy.deepcopy(list(rules)))
    return f


def SetSpecEgressRules(*rules):
    def f(policy):
        spec = policy["spec"]
        if spec["egress"] is None:
            spec["egress"] = []
            spec["policyTypes"] = (spec["policyTypes"] or []) + [PolicyTypeEgress]
        spec["egress"].extend(copy.deepcopy(list(rules)))
    return f


def serialize_policy(policy):
    """NetworkPolicy as the Go client sends it (json tags, omitempty)."""
    spec = policy["spec"]
    out_spec = {"podSelector": spec["podSelector"]}
    if spec["ingress"]:
        out_spec["ingress"] = spec["ingress"]
    if spec["egress"]:
        out_spec["egress"] = spec["egress"]
    if spec["policyTypes"]:
        out_spec["policyTypes"] = spec["policyTypes"]
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": policy["metadata"]["name"], "namespace": policy["metadata"]["namespace"]},
        "spec": out_spec,
    }


# ---------------------------------------------------------------------------
# reachability.go / truthtable.go
# ---------------------------------------------------------------------------


def NewPodString(namespace, podName):
    return f"{namespace}/{podName}"


class Peer:
    def __init__(self, Namespace="", Pod=""):
        self.Namespace = Namespace
        self.Pod = Pod

    def Matches(self, pod):
        ns, name = pod.split("/")
        return (self.Namespace == "" or self.Namespace == ns) and (self.Pod == "" or self.Pod == name)


class Reachability:
    def __init__(self, podStrings, defaultExpectation):
        self.PodStrings = list(podStrings)
        self.Expected = {f: {t: defaultExpectation for t in self.PodStrings} for f in self.PodStrings}

    def _set(self, frm, to, value):
        assert frm in self.Expected and to in self.Expected[frm], (frm, to)
        self.Expected[frm][to] = value

    def Expect(self, frm, to, isConnected):
        self._set(frm, to, isConnected)

    def ExpectAllIngress(self, pod, connected):  # TruthTable.SetAllTo
        for frm in self.PodStrings:
            self._set(frm, pod, connected)

    def ExpectAllEgress(self, pod, connected):  # TruthTable.SetAllFrom
        for to in self.PodStrings:
            self._set(pod, to, connected)

    def ExpectPeer(self, frm, to, connected):
        for fromPod in self.PodStrings:
            if frm.Matches(fromPod):
                for toPod in self.PodStrings:
                    if to.Matches(toPod):
                        self._set(fromPod, toPod, connected)

    def AllowLoopback(self):
        for pod in self.PodStrings:
            self._set(pod, pod, True)


def NewReachability(podStrings, defaultExpectation):
    return Reachability(podStrings, defaultExpectation)


class TestCase:
    def __init__(self, ToPort, Protocol, Reachability):
        self.ToPort = ToPort
        self.Protocol = Protocol
        self.Reachability = Reachability


# ---------------------------------------------------------------------------
# The kubeManager stand-in: records the cluster/policy state at every ValidateOrFail.
# Consecutive validations without a state change in between form one stage.
# ---------------------------------------------------------------------------


class K8s:
    def __init__(self, family):
        self.family = family  # the family of status.podIP on the (virtual) cluster; see ipBlock cases
        self.state = ClusterState()
        self.policies = {}  # (ns, name) -> policy, in creation order
        self.stages = []
        self.dirty = True
        self.log = []

    def AllPodStrings(self):
        return all_pod_strings()

    def NamespaceNames(self):
        return list(NAMESPACES)

    def PodIP(self, ns, pod):
        return pod_ip(ns, pod, self.family)

    def _changed(self, what):
        self.dirty = True
        self.log.append(what)

    def create_policy(self, policy, ns):
        p = copy.deepcopy(policy)
        p["metadata"]["namespace"] = ns
        key = (ns, p["metadata"]["name"])
        assert key not in self.policies, f"CreatePolicy of existing {key}"
        self.policies[key] = p
        self._changed(f"CreatePolicy {ns}/{key[1]}")

    def update_policy(self, policy, ns):
        p = copy.deepcopy(policy)
        p["metadata"]["namespace"] = ns
        key = (ns, p["metadata"]["name"])
        assert key in self.policies, f"UpdatePolicy of missing {key}"
        self.policies[key] = p
        self._changed(f"UpdatePolicy {ns}/{key[1]}")

    def clean_network_policies(self):
        self.policies = {}
        self._changed("cleanNetworkPolicies (all policies deleted)")

    def add_namespace_label(self, ns, key, value):
        self.state.ns_labels[ns][key] = value
        self._changed(f"AddNamespaceLabel {ns} {key}={value}")

    def add_pod_labels(self, ns, pod, labels):
        self.state.pod_labels[(ns, pod)].update(labels)
        self._changed(f"AddPodLabels {ns}/{pod} " + ",".join(f"{k}={v}" for k, v in labels.items()))

    def validate(self, testCase):
        if self.dirty or not self.stages:
            self.stages.append({
                "state": copy.deepcopy(self.state),
                "policies": [copy.deepcopy(p) for p in self.policies.values()],
                "history": list(self.log),
                "validations": [],
            })
            self.dirty = False
        raw = copy.deepcopy(testCase.Reachability)
        final = copy.deepcopy(testCase.Reachability)
        # Upstream never asserts loopback (ignoreLoopback = true in network_policy.go:
        # Reachability.Summary skips from == to). podwall's contract is that a pod can always
        # reach itself, so we apply the upstream helper AllowLoopback() last.
        final.AllowLoopback()
        self.stages[-1]["validations"].append((testCase.ToPort, testCase.Protocol, raw, final))


def CreatePolicy(k8s, policy, namespace):
    k8s.create_policy(policy, namespace)


def UpdatePolicy(k8s, policy, namespace):
    k8s.update_policy(policy, namespace)


def AddNamespaceLabel(k8s, namespace, key, value):
    k8s.add_namespace_label(namespace, key, value)


def AddPodLabels(k8s, namespace, pod, labels):
    k8s.add_pod_labels(namespace, pod, labels)


def ValidateOrFail(k8s, testCase):
    k8s.validate(testCase)


def getK8sNamespaces(k8s):
    ns = k8s.NamespaceNames()
    return ns[0], ns[1], ns[2]


def hostMask(family):
    # network_policy.go: hostMask := 32; if utilnet.IsIPv6String(pod.Status.PodIP) { hostMask = 128 }
    return 128 if family == IPV6 else 32


def makeLargeCIDRForIP(ip):
    # network_policy.go (current master): the /4 that contains the IP, written canonically.
    # At the pinned commit the test wrote fmt.Sprintf("%s/4", podA.Status.PodIP), i.e. the
    # same network with host bits set ("10.0.1.1/4"); we use the canonical spelling, which
    # newer API servers require.
    return str(ipaddress.ip_network(f"{ip}/4", strict=False))


# ---------------------------------------------------------------------------
# The cases. Each function body follows the Go body of the f.It with the same text.
# ---------------------------------------------------------------------------

CASES = []
CTX_MAIN = ("Netpol", "NetworkPolicy between server and client")
CTX_UDP = ("Netpol [LinuxOnly]", "NetworkPolicy between server and client using UDP")
CTX_SCTP = ("Netpol [Feature:SCTPConnectivity] [LinuxOnly]", "NetworkPolicy between server and client using SCTP")


def case(text, ctx=CTX_MAIN, families=None, newest_pods=None, notes=""):
    def register(fn):
        CASES.append({"text": text, "ctx": ctx, "fn": fn, "families": families,
                      "newest_pods": newest_pods, "notes": notes})
        return fn
    return register


@case("should support a 'default-deny-ingress' policy", newest_pods="x/a x/b y/a y/b")
def _(k8s):
    nsX, _, _ = getK8sNamespaces(k8s)
    policy = GenNetworkPolicyWithNameAndPodSelector("deny-ingress", LabelSelector(), SetSpecIngressRules())
    CreatePolicy(k8s, policy, nsX)
    reachability = NewReachability(k8s.AllPodStrings(), True)
    reachability.ExpectPeer(Peer(), Peer(Namespace=nsX), False)
    ValidateOrFail(k8s, TestCase(ToPort=80, Protocol=protocolTCP, Reachability=reachability))


@case("should support a 'default-deny-all' policy", newest_pods="x/a x/b y/a")
def _(k8s):
    policy = GenNetworkPolicyWithNameAndPodSelector("deny-all", LabelSelector(), SetSpecIngressRules(), SetSpecEgressRules())
    nsX, _, _ = getK8sNamespaces(k8s)
    CreatePolicy(k8s, policy, nsX)
    reachability = NewReachability(k8s.AllPodStrings(), True)
    reachability.ExpectPeer(Peer(), Peer(Namespace=nsX), False)
    reachability.ExpectPeer(Peer(Namespace=nsX), Peer(), False)
    ValidateOrFail(k8s, TestCase(ToPort=80, Protocol=protocolTCP, Reachability=reachability))


@case("should enforce policy to allow traffic from pods within server namespace based on PodSelector", newest_pods="x/a x/b x/c y/a")
def _(k8s):
    allowedPods = LabelSelector(MatchLabels={"pod": "b"})
    ingressRule = NetworkPolicyIngressRule(From=[NetworkPolicyPeer(PodSelector=allowedPods)])
    policy = GenNetworkPolicyWithNameAndPodMatchLabel("x-a-allows-x-b", {"pod": "a"}, SetSpecIngressRules(ingressRule))
    nsX, _, _ = getK8sNamespaces(k8s)
    CreatePolicy(k8s, policy, nsX)
    reachability = NewReachability(k8s.AllPodStrings(), True)
    reachability.ExpectAllIngress(NewPodString(nsX, "a"), False)
    reachability.Expect(NewPodString(nsX, "b"), NewPodString(nsX, "a"), True)
    ValidateOrFail(k8s, TestCase(ToPort=80, Protocol=protocolTCP, Reachability=reachability))


@case("should enforce policy to allow ingress traffic for a target", newest_pods="x/a x/b y/a")
def _(k8s):
    nsX, _, _ = getK8sNamespaces(k8s)
    # ginkgo.By("having a deny all ingress policy")
    policy = GenNetworkPolicyWithNameAndPodSelector("deny-all", LabelSelector(), SetSpecIngressRules())
    CreatePolicy(k8s, policy, nsX)
    # Allow Ingress traffic only to pod x/a from any pod
    ingressRule = NetworkPolicyIngressRule(From=[NetworkPolicyPeer(PodSelector=LabelSelector(), NamespaceSelector=LabelSelector())])
    allowPolicy = GenNetworkPolicyWithNameAndPodMatchLabel("allow-all-to-a", {"pod": "a"}, SetSpecIngressRules(ingressRule))
    CreatePolicy(k8s, allowPolicy, nsX)
    reachability = NewReachability(k8s.AllPodStrings(), True)
    reachability.ExpectAllIngress(NewPodString(nsX, "a"), True)
    reachability.ExpectAllIngress(NewPodString(nsX, "b"), False)
    reachability.ExpectAllIngress(NewPodString(nsX, "c"), False)
    ValidateOrFail(k8s, TestCase(ToPort=80, Protocol=protocolTCP, Reachability=reachability))


@case("should enforce policy to allow ingress traffic from pods in all namespaces", newest_pods="x/a x/b y/a z/a")
def _(k8s):
    nsX, _, _ = getK8sNamespaces(k8s)
    ingressRule = NetworkPolicyIngressRule(From=[NetworkPolicyPeer(NamespaceSelector=LabelSelector(MatchLabels={}))])
    policy = GenNetworkPolicyWithNameAndPodMatchLabel("allow-from-another-ns", {"pod": "a"}, SetSpecIngressRules(ingressRule))
    CreatePolicy(k8s, policy, nsX)
    reachability = NewReachability(k8s.AllPodStrings(), True)
    ValidateOrFail(k8s, TestCase(ToPort=80, Protocol=protocolTCP, Reachability=reachability))


@case("should enforce policy to allow traffic only from a different namespace, based on NamespaceSelector", newest_pods="x/a x/b y/a z/a")
def _(k8s):
    nsX, nsY, nsZ = getK8sNamespaces(k8s)
    ingressRule = NetworkPolicyIngressRule(From=[NetworkPolicyPeer(NamespaceSelector=LabelSelector(MatchLabels={namespaceLabelKey: nsY}))])
    policy = GenNetworkPolicyWithNameAndPodMatchLabel("allow-client-a-via-ns-selector", {"pod": "a"}, SetSpecIngressRules(ingressRule))
    CreatePolicy(k8s, policy, nsX)
    reachability = NewReachability(k8s.AllPodStrings(), True)
    # disallow all traffic from the x or z namespaces
    reachability.ExpectPeer(Peer(Namespace=nsX), Peer(Namespace=nsX, Pod="a"), False)
    reachability.ExpectPeer(Peer(Namespace=nsZ), Peer(Namespace=nsX, Pod="a"), False)
    ValidateOrFail(k8s, TestCase(ToPort=80, Protocol=protocolTCP, Reachability=reachability))


@case("should enforce policy based on PodSelector with MatchExpressions", newest_pods="x/a x/b y/a")
def _(k8s):
    allowedPods = LabelSelector(MatchExpressions=[LabelSelectorRequirement(Key="pod", Operator=LabelSelectorOpIn, Values=["b"])])
    ingressRule = NetworkPolicyIngressRule(From=[NetworkPolicyPeer(PodSelector=allowedPods)])
    policy = GenNetworkPolicyWithNameAndPodMatchLabel("x-a-allows-x-b", {"pod": "a"}, SetSpecIngressRules(ingressRule))
    nsX, _, _ = getK8sNamespaces(k8s)
    CreatePolicy(k8s, policy, nsX)
    reachability = NewReachability(k8s.AllPodStrings(), True)
    reachability.ExpectAllIngress(NewPodString(nsX, "a"), False)
    reachability.Expect(NewPodString(nsX, "b"), NewPodString(nsX, "a"), True)
    ValidateOrFail(k8s, TestCase(ToPort=80, Protocol=protocolTCP, Reachability=reachability))


@case("should enforce policy based on NamespaceSelector with MatchExpressions", newest_pods="x/a x/b y/a z/a")
def _(k8s):
    nsX, nsY, nsZ = getK8sNamespaces(k8s)
    allowedNamespaces = LabelSelector(MatchExpressions=[LabelSelectorRequirement(Key=namespaceLabelKey, Operator=LabelSelectorOpIn, Values=[nsY])])
    ingressRule = NetworkPolicyIngressRule(From=[NetworkPolicyPeer(NamespaceSelector=allowedNamespaces)])
    policy = GenNetworkPolicyWithNameAndPodMatchLabel("allow-ns-y-match-selector", {"pod": "a"}, SetSpecIngressRules(ingressRule))
    CreatePolicy(k8s, policy, nsX)
    reachability = NewReachability(k8s.AllPodStrings(), True)
    # disallow all traffic from the x or z namespaces
    reachability.ExpectPeer(Peer(Namespace=nsX), Peer(Namespace=nsX, Pod="a"), False)
    reachability.ExpectPeer(Peer(Namespace=nsZ), Peer(Namespace=nsX, Pod="a"), False)
    ValidateOrFail(k8s, TestCase(ToPort=80, Protocol=protocolTCP, Reachability=reachability))


@case("should enforce policy based on PodSelector or NamespaceSelector", newest_pods="x/a x/b x/c y/a")
def _(k8s):
    nsX, _, _ = getK8sNamespaces(k8s)
    allowedNamespaces = LabelSelector(MatchExpressions=[LabelSelectorRequirement(Key=namespaceLabelKey, Operator=LabelSelectorOpNotIn, Values=[nsX])])
    podBAllowlisting = LabelSelector(MatchLabels={"pod": "b"})
    ingressRule = NetworkPolicyIngressRule(From=[NetworkPolicyPeer(NamespaceSelector=allowedNamespaces), NetworkPolicyPeer(PodSelector=podBAllowlisting)])
    policy = GenNetworkPolicyWithNameAndPodMatchLabel("allow-ns-y-match-selector", {"pod": "a"}, SetSpecIngressRules(ingressRule))
    CreatePolicy(k8s, policy, nsX)
    reachability = NewReachability(k8s.AllPodStrings(), True)
    reachability.Expect(NewPodString(nsX, "a"), NewPodString(nsX, "a"), False)
    reachability.Expect(NewPodString(nsX, "c"), NewPodString(nsX, "a"), False)
    ValidateOrFail(k8s, TestCase(ToPort=80, Protocol=protocolTCP, Reachability=reachability))


@case("should enforce policy based on PodSelector and NamespaceSelector", newest_pods="x/a x/b y/a y/b z/b")
def _(k8s):
    nsX, nsY, nsZ = getK8sNamespaces(k8s)
    allowedNamespaces = LabelSelector(MatchExpressions=[LabelSelectorRequirement(Key=namespaceLabelKey, Operator=LabelSelectorOpNotIn, Values=[nsX])])
    allowedPod = LabelSelector(MatchLabels={"pod": "b"})
    ingressRule = NetworkPolicyIngressRule(From=[NetworkPolicyPeer(NamespaceSelector=allowedNamespaces, PodSelector=allowedPod)])
    policy = GenNetworkPolicyWithNameAndPodMatchLabel("allow-ns-y-podselector-and-nsselector", {"pod": "a"}, SetSpecIngressRules(ingressRule))
    CreatePolicy(k8s, policy, nsX)
    reachability = NewReachability(k8s.AllPodStrings(), True)
    reachability.ExpectAllIngress(NewPodString(nsX, "a"), False)
    reachability.Expect(NewPodString(nsY, "b"), NewPodString(nsX, "a"), True)
    reachability.Expect(NewPodString(nsZ, "b"), NewPodString(nsX, "a"), True)
    ValidateOrFail(k8s, TestCase(ToPort=80, Protocol=protocolTCP, Reachability=reachability))


@case("should enforce policy based on Multiple PodSelectors and NamespaceSelectors", newest_pods="x/a x/b y/a y/b y/c")
def _(k8s):
    nsX, nsY, nsZ = getK8sNamespaces(k8s)
    allowedNamespaces = LabelSelector(MatchExpressions=[LabelSelectorRequirement(Key=namespaceLabelKey, Operator=LabelSelectorOpNotIn, Values=[nsX])])
    allowedPod = LabelSelector(MatchExpressions=[LabelSelectorRequirement(Key="pod", Operator=LabelSelectorOpIn, Values=["b", "c"])])
    ingressRule = NetworkPolicyIngressRule(From=[NetworkPolicyPeer(NamespaceSelector=allowedNamespaces, PodSelector=allowedPod)])
    policy = GenNetworkPolicyWithNameAndPodMatchLabel("allow-ns-y-z-pod-b-c", {"pod": "a"}, SetSpecIngressRules(ingressRule))
    CreatePolicy(k8s, policy, nsX)
    reachability = NewReachability(k8s.AllPodStrings(), True)
    reachability.ExpectPeer(Peer(Namespace=nsX), Peer(Namespace=nsX, Pod="a"), False)
    reachability.Expect(NewPodString(nsY, "a"), NewPodString(nsX, "a"), False)
    reachability.Expect(NewPodString(nsZ, "a"), NewPodString(nsX, "a"), False)
    ValidateOrFail(k8s, TestCase(ToPort=80, Protocol=protocolTCP, Reachability=reachability))


@case("should enforce policy based on any PodSelectors", newest_pods="x/a x/b x/c")
def _(k8s):
    nsX, _, _ = getK8sNamespaces(k8s)
    ingressRule = NetworkPolicyIngressRule(From=[NetworkPolicyPeer(PodSelector=LabelSelector(MatchLabels=label)) for label in [{"pod": "b"}, {"pod": "c"}]])
    policy = GenNetworkPolicyWithNameAndPodMatchLabel("allow-ns-x-pod-b-c", {"pod": "a"}, SetSpecIngressRules(ingressRule))
    CreatePolicy(k8s, policy, nsX)
    reachability = NewReachability(k8s.AllPodStrings(), True)
    reachability.ExpectAllIngress(NewPodString(nsX, "a"), False)
    # Connect Pods b and c to pod a from namespace nsX
    reachability.Expect(NewPodString(nsX, "b"), NewPodString(nsX, "a"), True)
    reachability.Expect(NewPodString(nsX, "c"), NewPodString(nsX, "a"), True)
    ValidateOrFail(k8s, TestCase(ToPort=80, Protocol=protocolTCP, Reachability=reachability))


def _pod_in_other_ns_by_pod_and_ns_selector(k8s, protocol):
    # shared by the TCP, UDP and SCTP variants (identical Go bodies apart from the protocol)
    nsX, nsY, _ = getK8sNamespaces(k8s)
    allowedNamespaces = LabelSelector(MatchLabels={namespaceLabelKey: nsY})
    allowedPods = LabelSelector(MatchLabels={"pod": "a"})
    ingressRule = NetworkPolicyIngressRule(From=[NetworkPolicyPeer(NamespaceSelector=allowedNamespaces, PodSelector=allowedPods)])
    policy = GenNetworkPolicyWithNameAndPodMatchLabel("allow-ns-y-pod-a-via-namespace-pod-selector", {"pod": "a"}, SetSpecIngressRules(ingressRule))
    CreatePolicy(k8s, policy, nsX)
    reachability = NewReachability(k8s.AllPodStrings(), True)
    reachability.ExpectAllIngress(NewPodString(nsX, "a"), False)
    reachability.Expect(NewPodString(nsY, "a"), NewPodString(nsX, "a"), True)
    ValidateOrFail(k8s, TestCase(ToPort=80, Protocol=protocol, Reachability=reachability))


@case("should enforce policy to allow traffic only from a pod in a different namespace based on PodSelector and NamespaceSelector", newest_pods="x/a x/b y/a y/b z/a")
def _(k8s):
    _pod_in_other_ns_by_pod_and_ns_selector(k8s, protocolTCP)


@case("should enforce policy based on Ports", newest_pods="x/a x/b y/a y/b z/a")
def _(k8s):
    # ginkgo.By("Creating a network allowPort81Policy which only allows allow listed namespaces (y) to connect on exactly one port (81)")
    nsX, nsY, nsZ = getK8sNamespaces(k8s)
    allowedLabels = LabelSelector(MatchLabels={namespaceLabelKey: nsY})
    ingressRule = NetworkPolicyIngressRule(From=[NetworkPolicyPeer(NamespaceSelector=allowedLabels)],
                                           Ports=[NetworkPolicyPort(Port=81, Protocol=protocolTCP)])
    allowPort81Policy = GenNetworkPolicyWithNameAndPodMatchLabel("allow-client-a-via-ns-selector", {"pod": "a"}, SetSpecIngressRules(ingressRule))
    CreatePolicy(k8s, allowPort81Policy, nsX)
    reachability = NewReachability(k8s.AllPodStrings(), True)
    reachability.ExpectPeer(Peer(Namespace=nsX), Peer(Namespace=nsX, Pod="a"), False)
    reachability.ExpectPeer(Peer(Namespace=nsY), Peer(Namespace=nsX, Pod="a"), True)
    reachability.ExpectPeer(Peer(Namespace=nsZ), Peer(Namespace=nsX, Pod="a"), False)
    ValidateOrFail(k8s, TestCase(ToPort=81, Protocol=protocolTCP, Reachability=reachability))


@case("should enforce multiple, stacked policies with overlapping podSelectors", newest_pods="x/a x/b y/a y/b z/a")
def _(k8s):
    nsX, nsY, nsZ = getK8sNamespaces(k8s)
    allowedLabels = LabelSelector(MatchLabels={namespaceLabelKey: nsY})
    ingressRule = NetworkPolicyIngressRule(From=[NetworkPolicyPeer(NamespaceSelector=allowedLabels)],
                                           Ports=[NetworkPolicyPort(Port=81, Protocol=protocolTCP)])
    allowPort81Policy = GenNetworkPolicyWithNameAndPodMatchLabel("allow-client-a-via-ns-selector", {"pod": "a"}, SetSpecIngressRules(ingressRule))
    CreatePolicy(k8s, allowPort81Policy, nsX)

    reachabilityALLOW = NewReachability(k8s.AllPodStrings(), True)
    reachabilityALLOW.ExpectPeer(Peer(Namespace=nsX), Peer(Namespace=nsX, Pod="a"), False)
    reachabilityALLOW.ExpectPeer(Peer(Namespace=nsY), Peer(Namespace=nsX, Pod="a"), True)
    reachabilityALLOW.ExpectPeer(Peer(Namespace=nsZ), Peer(Namespace=nsX, Pod="a"), False)
    # ginkgo.By("Verifying traffic on port 81.")
    ValidateOrFail(k8s, TestCase(ToPort=81, Protocol=protocolTCP, Reachability=reachabilityALLOW))

    reachabilityDENY = NewReachability(k8s.AllPodStrings(), True)
    reachabilityDENY.ExpectAllIngress(NewPodString(nsX, "a"), False)
    # ginkgo.By("Verifying traffic on port 80.")
    ValidateOrFail(k8s, TestCase(ToPort=80, Protocol=protocolTCP, Reachability=reachabilityDENY))

    ingressRule = NetworkPolicyIngressRule(From=[NetworkPolicyPeer(NamespaceSelector=allowedLabels)],
                                           Ports=[NetworkPolicyPort(Port=80, Protocol=protocolTCP)])
    allowPort80Policy = GenNetworkPolicyWithNameAndPodMatchLabel("allow-client-a-via-ns-selector-80", {"pod": "a"}, SetSpecIngressRules(ingressRule))
    CreatePolicy(k8s, allowPort80Policy, nsX)
    # ginkgo.By("Verifying that we can add a policy to unblock port 80")
    ValidateOrFail(k8s, TestCase(ToPort=80, Protocol=protocolTCP, Reachability=reachabilityALLOW))


@case("should support allow-all policy", newest_pods="x/a x/b y/a")
def _(k8s):
    policy = GenNetworkPolicyWithNameAndPodMatchLabel("allow-all", {}, SetSpecIngressRules(NetworkPolicyIngressRule()))
    nsX, _, _ = getK8sNamespaces(k8s)
    CreatePolicy(k8s, policy, nsX)
    reachability = NewReachability(k8s.AllPodStrings(), True)
    ValidateOrFail(k8s, TestCase(ToPort=80, Protocol=protocolTCP, Reachability=reachability))
    ValidateOrFail(k8s, TestCase(ToPort=81, Protocol=protocolTCP, Reachability=reachability))


@case("should allow ingress access on one named port", newest_pods="x/a x/b y/a")
def _(k8s):
    IngressRules = NetworkPolicyIngressRule(Ports=[NetworkPolicyPort(Port="serve-81-tcp")])
    policy = GenNetworkPolicyWithNameAndPodMatchLabel("allow-all", {}, SetSpecIngressRules(IngressRules))
    nsX, _, _ = getK8sNamespaces(k8s)
    CreatePolicy(k8s, policy, nsX)
    # ginkgo.By("Blocking all ports other then 81 in the entire namespace")
    reachabilityPort81 = NewReachability(k8s.AllPodStrings(), True)
    ValidateOrFail(k8s, TestCase(ToPort=81, Protocol=protocolTCP, Reachability=reachabilityPort81))
    # disallow all traffic to the x namespace
    reachabilityPort80 = NewReachability(k8s.AllPodStrings(), True)
    reachabilityPort80.ExpectPeer(Peer(), Peer(Namespace=nsX), False)
    ValidateOrFail(k8s, TestCase(ToPort=80, Protocol=protocolTCP, Reachability=reachabilityPort80))


@case("should allow ingress access from namespace on one named port", newest_pods="x/a x/b y/a z/a")
def _(k8s):
    nsX, nsY, nsZ = getK8sNamespaces(k8s)
    allowedLabels = LabelSelector(MatchLabels={namespaceLabelKey: nsY})
    ingressRule = NetworkPolicyIngressRule(From=[NetworkPolicyPeer(NamespaceSelector=allowedLabels)],
                                           Ports=[NetworkPolicyPort(Port="serve-80-tcp", Protocol=protocolTCP)])
    policy = GenNetworkPolicyWithNameAndPodMatchLabel("allow-client-a-via-ns-selector-80", {"pod": "a"}, SetSpecIngressRules(ingressRule))
    CreatePolicy(k8s, policy, nsX)
    reachability = NewReachability(k8s.AllPodStrings(), True)
    # disallow all traffic from the x or z namespaces
    reachability.ExpectPeer(Peer(Namespace=nsX), Peer(Namespace=nsX, Pod="a"), False)
    reachability.ExpectPeer(Peer(Namespace=nsZ), Peer(Namespace=nsX, Pod="a"), False)
    # ginkgo.By("Verify that port 80 is allowed for namespace y")
    ValidateOrFail(k8s, TestCase(ToPort=80, Protocol=protocolTCP, Reachability=reachability))
    # ginkgo.By("Verify that port 81 is blocked for all namespaces including y")
    reachabilityFAIL = NewReachability(k8s.AllPodStrings(), True)
    reachabilityFAIL.ExpectAllIngress(NewPodString(nsX, "a"), False)
    ValidateOrFail(k8s, TestCase(ToPort=81, Protocol=protocolTCP, Reachability=reachabilityFAIL))


@case("should allow egress access on one named port", newest_pods="x/a y/a")
def _(k8s):
    # ginkgo.By("validating egress from port 81 to port 80")
    egressRule = NetworkPolicyEgressRule(Ports=[NetworkPolicyPort(Port="serve-80-tcp")])
    policy = GenNetworkPolicyWithNameAndPodMatchLabel("allow-egress", {}, SetSpecEgressRules(egressRule))
    nsX, _, _ = getK8sNamespaces(k8s)
    CreatePolicy(k8s, policy, nsX)
    reachabilityPort80 = NewReachability(k8s.AllPodStrings(), True)
    ValidateOrFail(k8s, TestCase(ToPort=80, Protocol=protocolTCP, Reachability=reachabilityPort80))
    # meanwhile no traffic over 81 should work, since our egress policy is on 80
    reachabilityPort81 = NewReachability(k8s.AllPodStrings(), True)
    reachabilityPort81.ExpectPeer(Peer(Namespace=nsX), Peer(), False)
    ValidateOrFail(k8s, TestCase(ToPort=81, Protocol=protocolTCP, Reachability=reachabilityPort81))


@case("should enforce updated policy", newest_pods="x/a y/a")
def _(k8s):
    # ginkgo.By("Using the simplest possible mutation: start with allow all, then switch to deny all")
    # part 1) allow all
    policy = GenNetworkPolicyWithNameAndPodMatchLabel("allow-all-mutate-to-deny-all", {}, SetSpecIngressRules(NetworkPolicyIngressRule()))
    nsX, _, _ = getK8sNamespaces(k8s)
    CreatePolicy(k8s, policy, nsX)
    reachability = NewReachability(k8s.AllPodStrings(), True)
    ValidateOrFail(k8s, TestCase(ToPort=81, Protocol=protocolTCP, Reachability=reachability))
    # part 2) update the policy to deny all
    policy["spec"]["ingress"] = []
    UpdatePolicy(k8s, policy, nsX)
    reachabilityDeny = NewReachability(k8s.AllPodStrings(), True)
    reachabilityDeny.ExpectPeer(Peer(), Peer(Namespace=nsX), False)
    ValidateOrFail(k8s, TestCase(ToPort=81, Protocol=protocolTCP, Reachability=reachabilityDeny))


@case("should allow ingress access from updated namespace", newest_pods="x/a y/a")
def _(k8s):
    nsX, nsY, _ = getK8sNamespaces(k8s)
    # ginkgo.DeferCleanup(DeleteNamespaceLabel, k8s, nsY, "ns2")
    allowedLabels = LabelSelector(MatchLabels={"ns2": "updated"})
    ingressRule = NetworkPolicyIngressRule(From=[NetworkPolicyPeer(NamespaceSelector=allowedLabels)])
    policy = GenNetworkPolicyWithNameAndPodMatchLabel("allow-client-a-via-ns-selector", {"pod": "a"}, SetSpecIngressRules(ingressRule))
    CreatePolicy(k8s, policy, nsX)
    reachability = NewReachability(k8s.AllPodStrings(), True)
    reachability.ExpectAllIngress(NewPodString(nsX, "a"), False)
    ValidateOrFail(k8s, TestCase(ToPort=80, Protocol=protocolTCP, Reachability=reachability))
    # add a new label
    AddNamespaceLabel(k8s, nsY, "ns2", "updated")
    # anything from namespace 'y' should be able to get to x/a
    reachabilityWithLabel = NewReachability(k8s.AllPodStrings(), True)
    reachabilityWithLabel.ExpectAllIngress(NewPodString(nsX, "a"), False)
    reachabilityWithLabel.ExpectPeer(Peer(Namespace=nsY), Peer(), True)
    ValidateOrFail(k8s, TestCase(ToPort=80, Protocol=protocolTCP, Reachability=reachabilityWithLabel))


@case("should allow ingress access from updated pod", newest_pods="x/a x/b")
def _(k8s):
    nsX, _, _ = getK8sNamespaces(k8s)
    # ginkgo.DeferCleanup(ResetPodLabels, k8s, nsX, "b")
    # add a new label
    matchLabels = {"pod": "b", "pod2": "updated"}
    allowedLabels = LabelSelector(MatchLabels=matchLabels)
    ingressRule = NetworkPolicyIngressRule(From=[NetworkPolicyPeer(PodSelector=allowedLabels)])
    policy = GenNetworkPolicyWithNameAndPodMatchLabel("allow-client-a-via-pod-selector", {"pod": "a"}, SetSpecIngressRules(ingressRule))
    CreatePolicy(k8s, policy, nsX)
    reachability = NewReachability(k8s.AllPodStrings(), True)
    reachability.ExpectAllIngress(NewPodString(nsX, "a"), False)
    ValidateOrFail(k8s, TestCase(ToPort=80, Protocol=protocolTCP, Reachability=reachability))
    AddPodLabels(k8s, nsX, "b", matchLabels)
    # ginkgo.By("x/b is able to reach x/a when label is updated")
    reachabilityWithLabel = NewReachability(k8s.AllPodStrings(), True)
    reachabilityWithLabel.ExpectAllIngress(NewPodString(nsX, "a"), False)
    reachabilityWithLabel.Expect(NewPodString(nsX, "b"), NewPodString(nsX, "a"), True)
    ValidateOrFail(k8s, TestCase(ToPort=80, Protocol=protocolTCP, Reachability=reachabilityWithLabel))


@case("should deny ingress from pods on other namespaces", newest_pods="x/a x/b y/a z/a")
def _(k8s):
    nsX, nsY, nsZ = getK8sNamespaces(k8s)
    IngressRules = NetworkPolicyIngressRule(From=[NetworkPolicyPeer(PodSelector=LabelSelector(MatchLabels={}))])
    policy = GenNetworkPolicyWithNameAndPodSelector("deny-empty-policy", LabelSelector(), SetSpecIngressRules(IngressRules))
    CreatePolicy(k8s, policy, nsX)
    reachability = NewReachability(k8s.AllPodStrings(), True)
    reachability.ExpectPeer(Peer(Namespace=nsY), Peer(Namespace=nsX), False)
    reachability.ExpectPeer(Peer(Namespace=nsZ), Peer(Namespace=nsX), False)
    ValidateOrFail(k8s, TestCase(ToPort=80, Protocol=protocolTCP, Reachability=reachability))


@case("should deny ingress access to updated pod", newest_pods="x/a y/a")
def _(k8s):
    nsX, _, _ = getK8sNamespaces(k8s)
    # ginkgo.DeferCleanup(ResetPodLabels, k8s, nsX, "a")
    policy = GenNetworkPolicyWithNameAndPodSelector("deny-ingress-via-label-selector",
                                                    LabelSelector(MatchLabels={"target": "isolated"}), SetSpecIngressRules())
    CreatePolicy(k8s, policy, nsX)
    # ginkgo.By("Verify that everything can reach x/a")
    reachability = NewReachability(k8s.AllPodStrings(), True)
    ValidateOrFail(k8s, TestCase(ToPort=80, Protocol=protocolTCP, Reachability=reachability))
    AddPodLabels(k8s, nsX, "a", {"target": "isolated"})
    reachabilityIsolated = NewReachability(k8s.AllPodStrings(), True)
    reachabilityIsolated.ExpectAllIngress(NewPodString(nsX, "a"), False)
    ValidateOrFail(k8s, TestCase(ToPort=80, Protocol=protocolTCP, Reachability=reachabilityIsolated))


@case("should deny egress from pods based on PodSelector", newest_pods="x/a x/b y/a")
def _(k8s):
    nsX, _, _ = getK8sNamespaces(k8s)
    policy = GenNetworkPolicyWithNameAndPodSelector("deny-egress-pod-a", LabelSelector(MatchLabels={"pod": "a"}), SetSpecEgressRules())
    CreatePolicy(k8s, policy, nsX)
    reachability = NewReachability(k8s.AllPodStrings(), True)
    reachability.ExpectAllEgress(NewPodString(nsX, "a"), False)
    ValidateOrFail(k8s, TestCase(ToPort=80, Protocol=protocolTCP, Reachability=reachability))


@case("should deny egress from all pods in a namespace", newest_pods="x/a x/b y/a")
def _(k8s):
    nsX, _, _ = getK8sNamespaces(k8s)
    policy = GenNetworkPolicyWithNameAndPodSelector("deny-egress-ns-x", LabelSelector(), SetSpecEgressRules())
    CreatePolicy(k8s, policy, nsX)
    reachability = NewReachability(k8s.AllPodStrings(), True)
    reachability.ExpectPeer(Peer(Namespace=nsX), Peer(), False)
    ValidateOrFail(k8s, TestCase(ToPort=80, Protocol=protocolTCP, Reachability=reachability))


@case("should work with Ingress, Egress specified together", newest_pods="x/a x/b x/c y/a")
def _(k8s):
    allowedPodLabels = LabelSelector(MatchLabels={"pod": "b"})
    ingressRule = NetworkPolicyIngressRule(From=[NetworkPolicyPeer(PodSelector=allowedPodLabels)])
    policy = GenNetworkPolicyWithNameAndPodMatchLabel("allow-client-a-via-pod-selector", {"pod": "a"}, SetSpecIngressRules(ingressRule))
    # add an egress rule on to it...
    policy["spec"]["egress"] = [
        NetworkPolicyEgressRule(Ports=[
            # don't use named ports
            NetworkPolicyPort(Port=80),
        ]),
    ]
    policy["spec"]["policyTypes"] = [PolicyTypeEgress, PolicyTypeIngress]
    nsX, _, _ = getK8sNamespaces(k8s)
    CreatePolicy(k8s, policy, nsX)
    reachabilityPort80 = NewReachability(k8s.AllPodStrings(), True)
    reachabilityPort80.ExpectAllIngress(NewPodString(nsX, "a"), False)
    reachabilityPort80.Expect(NewPodString(nsX, "b"), NewPodString(nsX, "a"), True)
    ValidateOrFail(k8s, TestCase(ToPort=80, Protocol=protocolTCP, Reachability=reachabilityPort80))
    # ginkgo.By("validating that port 81 doesn't work")
    # meanwhile no egress traffic on 81 should work, since our egress policy is on 80
    reachabilityPort81 = NewReachability(k8s.AllPodStrings(), True)
    reachabilityPort81.ExpectAllIngress(NewPodString(nsX, "a"), False)
    reachabilityPort81.ExpectAllEgress(NewPodString(nsX, "a"), False)
    reachabilityPort81.Expect(NewPodString(nsX, "b"), NewPodString(nsX, "a"), True)
    ValidateOrFail(k8s, TestCase(ToPort=81, Protocol=protocolTCP, Reachability=reachabilityPort81))


@case("should support denying of egress traffic on the client side (even if the server explicitly allows this traffic)", newest_pods="x/a y/a y/b")
def _(k8s):
    nsX, nsY, _ = getK8sNamespaces(k8s)
    # Building egress policy for x/a to y/a only
    allowedEgressNamespaces = LabelSelector(MatchLabels={namespaceLabelKey: nsY})
    allowedEgressPods = LabelSelector(MatchLabels={"pod": "a"})
    egressRule1 = NetworkPolicyEgressRule(To=[NetworkPolicyPeer(NamespaceSelector=allowedEgressNamespaces, PodSelector=allowedEgressPods)])
    egressPolicy = GenNetworkPolicyWithNameAndPodMatchLabel("allow-to-ns-y-pod-a", {"pod": "a"}, SetSpecEgressRules(egressRule1))
    CreatePolicy(k8s, egressPolicy, nsX)
    # Creating ingress policy to allow from x/a to y/a and y/b
    allowedIngressNamespaces = LabelSelector(MatchLabels={namespaceLabelKey: nsX})
    allowedIngressPods = LabelSelector(MatchLabels={"pod": "a"})
    ingressRule = NetworkPolicyIngressRule(From=[NetworkPolicyPeer(NamespaceSelector=allowedIngressNamespaces, PodSelector=allowedIngressPods)])
    allowIngressPolicyPodA = GenNetworkPolicyWithNameAndPodMatchLabel("allow-from-xa-on-ya-match-selector", {"pod": "a"}, SetSpecIngressRules(ingressRule))
    allowIngressPolicyPodB = GenNetworkPolicyWithNameAndPodMatchLabel("allow-from-xa-on-yb-match-selector", {"pod": "b"}, SetSpecIngressRules(ingressRule))
    CreatePolicy(k8s, allowIngressPolicyPodA, nsY)
    CreatePolicy(k8s, allowIngressPolicyPodB, nsY)
    reachability = NewReachability(k8s.AllPodStrings(), True)
    # Exception: x/a can only egress to y/a, others are false
    # Exception: y/a can only allow ingress from x/a, others are false
    # Exception: y/b has no allowed traffic (due to limit on x/a egress)
    reachability.ExpectPeer(Peer(Namespace=nsX, Pod="a"), Peer(), False)
    reachability.ExpectPeer(Peer(), Peer(Namespace=nsY, Pod="a"), False)
    reachability.ExpectPeer(Peer(Namespace=nsX, Pod="a"), Peer(Namespace=nsY, Pod="a"), True)
    reachability.ExpectPeer(Peer(), Peer(Namespace=nsY, Pod="b"), False)
    ValidateOrFail(k8s, TestCase(ToPort=80, Protocol=protocolTCP, Reachability=reachability))


@case("should enforce egress policy allowing traffic to a server in a different namespace based on PodSelector and NamespaceSelector", newest_pods="x/a y/a y/b")
def _(k8s):
    nsX, nsY, _ = getK8sNamespaces(k8s)
    allowedNamespaces = LabelSelector(MatchLabels={namespaceLabelKey: nsY})
    allowedPods = LabelSelector(MatchLabels={"pod": "a"})
    egressRule1 = NetworkPolicyEgressRule(To=[NetworkPolicyPeer(NamespaceSelector=allowedNamespaces, PodSelector=allowedPods)])
    policy = GenNetworkPolicyWithNameAndPodMatchLabel("allow-to-ns-y-pod-a", {"pod": "a"}, SetSpecEgressRules(egressRule1))
    CreatePolicy(k8s, policy, nsX)
    reachability = NewReachability(k8s.AllPodStrings(), True)
    reachability.ExpectAllEgress(NewPodString(nsX, "a"), False)
    reachability.Expect(NewPodString(nsX, "a"), NewPodString(nsY, "a"), True)
    ValidateOrFail(k8s, TestCase(ToPort=80, Protocol=protocolTCP, Reachability=reachability))


@case("should enforce ingress policy allowing any port traffic to a server on a specific protocol", newest_pods="x/a y/a")
def _(k8s):
    nsX, _, _ = getK8sNamespaces(k8s)
    ingressRule = NetworkPolicyIngressRule(Ports=[NetworkPolicyPort(Protocol=protocolTCP)])
    policy = GenNetworkPolicyWithNameAndPodMatchLabel("allow-ingress-by-proto", {"pod": "a"}, SetSpecIngressRules(ingressRule))
    CreatePolicy(k8s, policy, nsX)
    reachabilityTCP = NewReachability(k8s.AllPodStrings(), True)
    ValidateOrFail(k8s, TestCase(ToPort=80, Protocol=protocolTCP, Reachability=reachabilityTCP))
    reachabilityUDP = NewReachability(k8s.AllPodStrings(), True)
    reachabilityUDP.ExpectPeer(Peer(), Peer(Namespace=nsX, Pod="a"), False)
    ValidateOrFail(k8s, TestCase(ToPort=80, Protocol=protocolUDP, Reachability=reachabilityUDP))


@case("should enforce multiple ingress policies with ingress allow-all policy taking precedence", newest_pods="x/a y/a")
def _(k8s):
    nsX, _, _ = getK8sNamespaces(k8s)
    IngressRules = NetworkPolicyIngressRule(Ports=[NetworkPolicyPort(Port=80)])
    policyAllowOnlyPort80 = GenNetworkPolicyWithNameAndPodMatchLabel("allow-ingress-port-80", {}, SetSpecIngressRules(IngressRules))
    CreatePolicy(k8s, policyAllowOnlyPort80, nsX)
    # ginkgo.By("The policy targets port 80 -- so let's make sure traffic on port 81 is blocked")
    reachability = NewReachability(k8s.AllPodStrings(), True)
    reachability.ExpectPeer(Peer(), Peer(Namespace=nsX), False)
    ValidateOrFail(k8s, TestCase(ToPort=81, Protocol=protocolTCP, Reachability=reachability))
    # ginkgo.By("Allowing all ports")
    policyAllowAll = GenNetworkPolicyWithNameAndPodMatchLabel("allow-ingress", {}, SetSpecIngressRules(NetworkPolicyIngressRule()))
    CreatePolicy(k8s, policyAllowAll, nsX)
    reachabilityAll = NewReachability(k8s.AllPodStrings(), True)
    ValidateOrFail(k8s, TestCase(ToPort=81, Protocol=protocolTCP, Reachability=reachabilityAll))


@case("should enforce multiple egress policies with egress allow-all policy taking precedence", newest_pods="x/a y/a")
def _(k8s):
    egressRule = NetworkPolicyEgressRule(Ports=[NetworkPolicyPort(Port=80)])
    policyAllowPort80 = GenNetworkPolicyWithNameAndPodMatchLabel("allow-egress-port-80", {}, SetSpecEgressRules(egressRule))
    nsX, _, _ = getK8sNamespaces(k8s)
    CreatePolicy(k8s, policyAllowPort80, nsX)
    # ginkgo.By("Making sure ingress doesn't work other than port 80")
    reachability = NewReachability(k8s.AllPodStrings(), True)
    reachability.ExpectPeer(Peer(Namespace=nsX), Peer(), False)
    ValidateOrFail(k8s, TestCase(ToPort=81, Protocol=protocolTCP, Reachability=reachability))
    # ginkgo.By("Allowing all ports")
    policyAllowAll = GenNetworkPolicyWithNameAndPodMatchLabel("allow-egress", {}, SetSpecEgressRules(NetworkPolicyEgressRule()))
    CreatePolicy(k8s, policyAllowAll, nsX)
    reachabilityAll = NewReachability(k8s.AllPodStrings(), True)
    ValidateOrFail(k8s, TestCase(ToPort=81, Protocol=protocolTCP, Reachability=reachabilityAll))


@case("should stop enforcing policies after they are deleted", newest_pods="x/a y/a")
def _(k8s):
    # ginkgo.By("Creating a network policy for the server which denies all traffic.")
    # Deny all traffic into and out of "x".
    policy = GenNetworkPolicyWithNameAndPodSelector("deny-all", LabelSelector(), SetSpecIngressRules(), SetSpecEgressRules())
    nsX, _, _ = getK8sNamespaces(k8s)
    CreatePolicy(k8s, policy, nsX)
    reachability = NewReachability(k8s.AllPodStrings(), True)
    # Expect all traffic into, and out of "x" to be False.
    reachability.ExpectPeer(Peer(Namespace=nsX), Peer(), False)
    reachability.ExpectPeer(Peer(), Peer(Namespace=nsX), False)
    ValidateOrFail(k8s, TestCase(ToPort=80, Protocol=protocolTCP, Reachability=reachability))
    k8s.clean_network_policies()
    # time.Sleep(3 * time.Second) -- timing only, nothing to model
    # Now the policy is deleted, we expect all connectivity to work again.
    reachabilityAll = NewReachability(k8s.AllPodStrings(), True)
    ValidateOrFail(k8s, TestCase(ToPort=80, Protocol=protocolTCP, Reachability=reachabilityAll))


IPBLOCK_NOTE = ("ipBlock case: the upstream test computes its CIDRs from pod.Status.PodIP, i.e. the "
                "cluster's primary IP family only, and probes through the Service ClusterIP of that "
                "family. The -ipv4 folder is the test on an IPv4-primary cluster (our cluster.yaml), "
                "the -ipv6 folder the same test on an IPv6-primary cluster (CIDRs from the fd00:: "
                "addresses); every probe carries ipFamily accordingly. The other family is not "
                "asserted upstream and is not probed.")


@case("should allow egress access to server in CIDR block", families=[IPV4, IPV6], newest_pods="x/a y/a y/b", notes=IPBLOCK_NOTE)
def _(k8s):
    # Getting podServer's status to get podServer's IP, to create the CIDR
    nsX, nsY, _ = getK8sNamespaces(k8s)
    # podList := Pods(nsY).List(LabelSelector: "pod=b"); pod := podList.Items[0]
    podIP = k8s.PodIP(nsY, "b")
    podServerCIDR = f"{podIP}/{hostMask(k8s.family)}"
    egressRule1 = NetworkPolicyEgressRule(To=[NetworkPolicyPeer(IPBlock=IPBlockOf(CIDR=podServerCIDR))])
    policyAllowCIDR = GenNetworkPolicyWithNameAndPodMatchLabel("allow-client-a-via-cidr-egress-rule", {"pod": "a"}, SetSpecEgressRules(egressRule1))
    CreatePolicy(k8s, policyAllowCIDR, nsX)
    reachability = NewReachability(k8s.AllPodStrings(), True)
    reachability.ExpectAllEgress(NewPodString(nsX, "a"), False)
    reachability.Expect(NewPodString(nsX, "a"), NewPodString(nsY, "b"), True)
    ValidateOrFail(k8s, TestCase(ToPort=80, Protocol=protocolTCP, Reachability=reachability))


@case("should enforce except clause while egress access to server in CIDR block", families=[IPV4, IPV6], newest_pods="x/a x/b x/c", notes=IPBLOCK_NOTE)
def _(k8s):
    # Getting podServer's status to get podServer's IP, to create the CIDR with except clause
    nsX, _, _ = getK8sNamespaces(k8s)
    podAIP = k8s.PodIP(nsX, "a")
    podServerAllowCIDR = makeLargeCIDRForIP(podAIP)  # pinned commit: fmt.Sprintf("%s/4", podA.Status.PodIP)
    podBIP = k8s.PodIP(nsX, "b")
    podServerExceptList = [f"{podBIP}/{hostMask(k8s.family)}"]
    egressRule1 = NetworkPolicyEgressRule(To=[NetworkPolicyPeer(IPBlock=IPBlockOf(CIDR=podServerAllowCIDR, Except=podServerExceptList))])
    policyAllowCIDR = GenNetworkPolicyWithNameAndPodMatchLabel("allow-client-a-via-cidr-egress-rule", {"pod": "a"}, SetSpecEgressRules(egressRule1))
    CreatePolicy(k8s, policyAllowCIDR, nsX)
    reachability = NewReachability(k8s.AllPodStrings(), True)
    reachability.Expect(NewPodString(nsX, "a"), NewPodString(nsX, "b"), False)
    ValidateOrFail(k8s, TestCase(ToPort=80, Protocol=protocolTCP, Reachability=reachability))


@case("should ensure an IP overlapping both IPBlock.CIDR and IPBlock.Except is allowed", families=[IPV4, IPV6], newest_pods="x/a x/b x/c",
      notes=IPBLOCK_NOTE + " Upstream creates the second policy with the SAME name and calls UpdatePolicy, so "
                           "stage 2 REPLACES the except-policy instead of adding a second one; stage 2 "
                           "therefore only allows x/a -> x/b.")
def _(k8s):
    nsX, _, _ = getK8sNamespaces(k8s)
    podAIP = k8s.PodIP(nsX, "a")
    podBIP_ = k8s.PodIP(nsX, "b")
    # Exclude podServer's IP with an Except clause
    mask = hostMask(k8s.family)
    podServerAllowCIDR = makeLargeCIDRForIP(podAIP)  # pinned commit: fmt.Sprintf("%s/4", podA.Status.PodIP)
    podServerExceptList = [f"{podBIP_}/{mask}"]
    egressRule1 = NetworkPolicyEgressRule(To=[NetworkPolicyPeer(IPBlock=IPBlockOf(CIDR=podServerAllowCIDR, Except=podServerExceptList))])
    policyAllowCIDR = GenNetworkPolicyWithNameAndPodMatchLabel("allow-client-a-via-cidr-egress-rule", {"pod": "a"}, SetSpecEgressRules(egressRule1))
    CreatePolicy(k8s, policyAllowCIDR, nsX)
    reachability = NewReachability(k8s.AllPodStrings(), True)
    reachability.Expect(NewPodString(nsX, "a"), NewPodString(nsX, "b"), False)
    ValidateOrFail(k8s, TestCase(ToPort=80, Protocol=protocolTCP, Reachability=reachability))

    podBIP = f"{podBIP_}/{mask}"
    # Create NetworkPolicy which allows access to the podServer using podServer's IP in allow CIDR.
    egressRule3 = NetworkPolicyEgressRule(To=[NetworkPolicyPeer(IPBlock=IPBlockOf(CIDR=podBIP))])
    allowPolicy = GenNetworkPolicyWithNameAndPodMatchLabel("allow-client-a-via-cidr-egress-rule", {"pod": "a"}, SetSpecEgressRules(egressRule3))
    # SHOULD THIS BE UPDATE OR CREATE JAY TESTING 10/31
    UpdatePolicy(k8s, allowPolicy, nsX)
    reachabilityAllow = NewReachability(k8s.AllPodStrings(), True)
    reachabilityAllow.ExpectAllEgress(NewPodString(nsX, "a"), False)
    reachabilityAllow.Expect(NewPodString(nsX, "a"), NewPodString(nsX, "b"), True)
    ValidateOrFail(k8s, TestCase(ToPort=80, Protocol=protocolTCP, Reachability=reachabilityAllow))


@case("should enforce policies to check ingress and egress policies can be controlled independently based on PodSelector", newest_pods="x/a x/b y/a")
def _(k8s):
    targetLabels = {"pod": "a"}
    # ginkgo.By("Creating a network policy for pod-a which allows Egress traffic to pod-b.")
    allowEgressPolicy = GenNetworkPolicyWithNameAndPodSelector("allow-egress-for-target",
                                                               LabelSelector(MatchLabels=targetLabels), SetSpecEgressRules(NetworkPolicyEgressRule()))
    nsX, _, _ = getK8sNamespaces(k8s)
    CreatePolicy(k8s, allowEgressPolicy, nsX)
    allowEgressReachability = NewReachability(k8s.AllPodStrings(), True)
    ValidateOrFail(k8s, TestCase(ToPort=80, Protocol=protocolTCP, Reachability=allowEgressReachability))
    # ginkgo.By("Creating a network policy for pod-a that denies traffic from pod-b.")
    denyAllIngressPolicy = GenNetworkPolicyWithNameAndPodSelector("deny-ingress-via-label-selector", LabelSelector(MatchLabels=targetLabels), SetSpecIngressRules())
    CreatePolicy(k8s, denyAllIngressPolicy, nsX)
    denyIngressToXReachability = NewReachability(k8s.AllPodStrings(), True)
    denyIngressToXReachability.ExpectAllIngress(NewPodString(nsX, "a"), False)
    ValidateOrFail(k8s, TestCase(ToPort=80, Protocol=protocolTCP, Reachability=denyIngressToXReachability))


@case("should not mistakenly treat 'protocol: SCTP' as 'protocol: TCP', even if the plugin doesn't support SCTP", newest_pods="x/a y/a")
def _(k8s):
    nsX, _, _ = getK8sNamespaces(k8s)
    # ginkgo.By("Creating a default-deny ingress policy.")
    # Empty podSelector blocks the entire namespace
    policy = GenNetworkPolicyWithNameAndPodSelector("deny-ingress", LabelSelector(), SetSpecIngressRules())
    CreatePolicy(k8s, policy, nsX)
    # ginkgo.By("Creating a network policy for the server which allows traffic only via SCTP on port 81.")
    ingressRule = NetworkPolicyIngressRule(Ports=[NetworkPolicyPort(Port=81, Protocol=protocolSCTP)])
    policy = GenNetworkPolicyWithNameAndPodMatchLabel("allow-only-sctp-ingress-on-port-81", {"pod": "a"}, SetSpecIngressRules(ingressRule))
    CreatePolicy(k8s, policy, nsX)
    # ginkgo.By("Trying to connect to TCP port 81, which should be blocked by the deny-ingress policy.")
    reachability = NewReachability(k8s.AllPodStrings(), True)
    reachability.ExpectPeer(Peer(), Peer(Namespace=nsX), False)
    ValidateOrFail(k8s, TestCase(ToPort=81, Protocol=protocolTCP, Reachability=reachability))


@case("should properly isolate pods that are selected by a policy allowing SCTP, even if the plugin doesn't support SCTP", newest_pods="x/a y/a")
def _(k8s):
    # ginkgo.By("Creating a network policy for the server which allows traffic only via SCTP on port 80.")
    ingressRule = NetworkPolicyIngressRule(Ports=[NetworkPolicyPort(Port=80, Protocol=protocolSCTP)])
    policy = GenNetworkPolicyWithNameAndPodMatchLabel("allow-only-sctp-ingress-on-port-80", {"pod": "a"}, SetSpecIngressRules(ingressRule))
    nsX, _, _ = getK8sNamespaces(k8s)
    CreatePolicy(k8s, policy, nsX)
    # ginkgo.By("Trying to connect to TCP port 81, which should be blocked by implicit isolation.")
    reachability = NewReachability(k8s.AllPodStrings(), True)
    reachability.ExpectAllIngress(NewPodString(nsX, "a"), False)
    ValidateOrFail(k8s, TestCase(ToPort=81, Protocol=protocolTCP, Reachability=reachability))


@case("should not allow access by TCP when a policy specifies only UDP", newest_pods="x/a y/a")
def _(k8s):
    ingressRule = NetworkPolicyIngressRule(Ports=[NetworkPolicyPort(Port=81, Protocol=protocolUDP)])
    policy = GenNetworkPolicyWithNameAndPodMatchLabel("allow-only-udp-ingress-on-port-81", {"pod": "a"}, SetSpecIngressRules(ingressRule))
    nsX, _, _ = getK8sNamespaces(k8s)
    CreatePolicy(k8s, policy, nsX)
    # ginkgo.By("Creating a network policy for the server which allows traffic only via UDP on port 81.")
    # Probing with TCP, so all traffic should be dropped.
    reachability = NewReachability(k8s.AllPodStrings(), True)
    reachability.ExpectAllIngress(NewPodString(nsX, "a"), False)
    ValidateOrFail(k8s, TestCase(ToPort=81, Protocol=protocolTCP, Reachability=reachability))


@case("should enforce policy to allow traffic based on NamespaceSelector with MatchLabels using default ns label", newest_pods="x/a x/b y/a z/a")
def _(k8s):
    nsX, nsY, nsZ = getK8sNamespaces(k8s)
    allowedLabels = LabelSelector(MatchLabels={"kubernetes.io/metadata.name": nsY})  # v1.LabelMetadataName
    ingressRule = NetworkPolicyIngressRule(From=[NetworkPolicyPeer(NamespaceSelector=allowedLabels)])
    policy = GenNetworkPolicyWithNameAndPodMatchLabel("allow-client-a-via-ns-selector-for-immutable-ns-label", {"pod": "a"}, SetSpecIngressRules(ingressRule))
    CreatePolicy(k8s, policy, nsX)
    reachability = NewReachability(k8s.AllPodStrings(), True)
    reachability.ExpectPeer(Peer(Namespace=nsX), Peer(Namespace=nsX, Pod="a"), False)
    reachability.ExpectPeer(Peer(Namespace=nsZ), Peer(Namespace=nsX, Pod="a"), False)
    ValidateOrFail(k8s, TestCase(ToPort=80, Protocol=protocolTCP, Reachability=reachability))


@case("should enforce policy based on NamespaceSelector with MatchExpressions using default ns label", newest_pods="x/a x/b y/a z/a")
def _(k8s):
    nsX, nsY, _ = getK8sNamespaces(k8s)
    allowedNamespaces = LabelSelector(MatchExpressions=[LabelSelectorRequirement(Key="kubernetes.io/metadata.name", Operator=LabelSelectorOpNotIn, Values=[nsY])])
    egressRule = NetworkPolicyEgressRule(To=[NetworkPolicyPeer(NamespaceSelector=allowedNamespaces)])
    policy = GenNetworkPolicyWithNameAndPodMatchLabel("allow-ns-y-match-selector-for-immutable-ns-label", {"pod": "a"}, SetSpecEgressRules(egressRule))
    CreatePolicy(k8s, policy, nsX)
    reachability = NewReachability(k8s.AllPodStrings(), True)
    reachability.ExpectPeer(Peer(Namespace=nsX, Pod="a"), Peer(Namespace=nsY), False)
    ValidateOrFail(k8s, TestCase(ToPort=80, Protocol=protocolTCP, Reachability=reachability))


# --- Describe("Netpol [LinuxOnly]") / Context("NetworkPolicy between server and client using UDP")
# --- Describe("Netpol", feature.SCTPConnectivity, "[LinuxOnly]") / Context("... using SCTP")
# The UDP and SCTP bodies are identical apart from the protocol; only the UDP/SCTP
# 'Ports' policy has a different name from the TCP one.


def _l4_default_deny_ingress(k8s, protocol):
    nsX, _, _ = getK8sNamespaces(k8s)
    policy = GenNetworkPolicyWithNameAndPodSelector("deny-all", LabelSelector(), SetSpecIngressRules())
    CreatePolicy(k8s, policy, nsX)
    reachability = NewReachability(k8s.AllPodStrings(), True)
    reachability.ExpectPeer(Peer(), Peer(Namespace=nsX), False)
    ValidateOrFail(k8s, TestCase(ToPort=80, Protocol=protocol, Reachability=reachability))


def _l4_ports(k8s, protocol):
    # ginkgo.By("Creating a network policy allowPort81Policy which only allows allow listed namespaces (y) to connect on exactly one port (81)")
    nsX, nsY, nsZ = getK8sNamespaces(k8s)
    allowedLabels = LabelSelector(MatchLabels={namespaceLabelKey: nsY})
    ingressRule = NetworkPolicyIngressRule(From=[NetworkPolicyPeer(NamespaceSelector=allowedLabels)],
                                           Ports=[NetworkPolicyPort(Port=81, Protocol=protocol)])
    allowPort81Policy = GenNetworkPolicyWithNameAndPodMatchLabel("allow-ingress-on-port-81-ns-x", {"pod": "a"}, SetSpecIngressRules(ingressRule))
    CreatePolicy(k8s, allowPort81Policy, nsX)
    reachability = NewReachability(k8s.AllPodStrings(), True)
    reachability.ExpectPeer(Peer(Namespace=nsX), Peer(Namespace=nsX, Pod="a"), False)
    reachability.ExpectPeer(Peer(Namespace=nsZ), Peer(Namespace=nsX, Pod="a"), False)
    ValidateOrFail(k8s, TestCase(ToPort=81, Protocol=protocol, Reachability=reachability))


for _ctx, _proto in ((CTX_UDP, protocolUDP), (CTX_SCTP, protocolSCTP)):
    case("should support a 'default-deny-ingress' policy", ctx=_ctx, newest_pods="x/a x/b y/a y/b")(
        lambda k8s, p=_proto: _l4_default_deny_ingress(k8s, p))
    case("should enforce policy based on Ports", ctx=_ctx, newest_pods="x/a x/b y/a z/a")(
        lambda k8s, p=_proto: _l4_ports(k8s, p))
    case("should enforce policy to allow traffic only from a pod in a different namespace based on PodSelector and NamespaceSelector",
         ctx=_ctx, newest_pods="x/a x/b y/a")(
        lambda k8s, p=_proto: _pod_in_other_ns_by_pod_and_ns_selector(k8s, p))


# ---------------------------------------------------------------------------
# Independent evaluator: NetworkPolicy semantics per the API reference, used only to
# cross-check that the transcribed manifests really produce the transcribed
# expectations (catches transcription slips in either).
# ---------------------------------------------------------------------------


def selector_matches(sel, labels):
    for k, v in (sel.get("matchLabels") or {}).items():
        if labels.get(k) != v:
            return False
    for req in sel.get("matchExpressions") or []:
        k, op, vals = req["key"], req["operator"], req.get("values") or []
        if op == "In" and not (k in labels and labels[k] in vals):
            return False
        if op == "NotIn" and (k in labels and labels[k] in vals):
            return False
        if op == "Exists" and k not in labels:
            return False
        if op == "DoesNotExist" and k in labels:
            return False
    return True


def _policy_types(spec):
    if spec.get("policyTypes"):
        return spec["policyTypes"]
    return ["Ingress"] + (["Egress"] if spec.get("egress") else [])


def _ports_match(ports, dst, proto, port):
    if not ports:
        return True
    ns, pod = dst.split("/")
    for p in ports:
        if p.get("protocol", "TCP") != proto:
            continue
        want = p.get("port")
        if want is None:
            return True
        if isinstance(want, str):
            # named port: resolved on the destination pod, same protocol
            if any(want == f"serve-{cp}-{cpr.lower()}" and cpr == proto and cp == port
                   for cp in PORTS for cpr in PROTOCOLS):
                return True
        elif want <= port <= p.get("endPort", want):
            return True
    return False


def _peer_matches(peer, policy_ns, other, state, family):
    ns, pod = other.split("/")
    if "ipBlock" in peer:
        ip = ipaddress.ip_address(pod_ip(ns, pod, family))
        net = ipaddress.ip_network(peer["ipBlock"]["cidr"], strict=False)
        if ip.version != net.version or ip not in net:
            return False
        return not any(ip.version == ipaddress.ip_network(e, strict=False).version and ip in ipaddress.ip_network(e, strict=False)
                       for e in peer["ipBlock"].get("except", []))
    if "namespaceSelector" in peer:
        if not selector_matches(peer["namespaceSelector"], state.ns_labels[ns]):
            return False
    elif ns != policy_ns:
        return False
    if "podSelector" in peer:
        return selector_matches(peer["podSelector"], state.pod_labels[(ns, pod)])
    return True


def _direction_allows(policies, state, subject, other, direction, dst, proto, port, family):
    ns, pod = subject.split("/")
    selecting = [p for p in policies
                 if p["metadata"]["namespace"] == ns
                 and selector_matches(p["spec"]["podSelector"], state.pod_labels[(ns, pod)])
                 and direction in _policy_types(p["spec"])]
    if not selecting:
        return True
    rules_key, peers_key = ("ingress", "from") if direction == "Ingress" else ("egress", "to")
    for p in selecting:
        for rule in p["spec"].get(rules_key) or []:
            if not _ports_match(rule.get("ports"), dst, proto, port):
                continue
            peers = rule.get(peers_key)
            if not peers or any(_peer_matches(peer, ns, other, state, family) for peer in peers):
                return True
    return False


def evaluate(state, policies, frm, to, proto, port, family):
    if frm == to:
        return True  # podwall: a pod can always reach itself
    return (_direction_allows(policies, state, frm, to, "Egress", to, proto, port, family)
            and _direction_allows(policies, state, to, frm, "Ingress", to, proto, port, family))


# ---------------------------------------------------------------------------
# Output
# ---------------------------------------------------------------------------


def kebab(text):
    return re.sub(r"[^a-z0-9]+", "-", text.lower().replace("'", "")).strip("-")


def write(path, text):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)


def yaml_str(s):
    return yaml.safe_dump(s, default_style='"', width=100000).strip()


README_BEGIN = "<!-- BEGIN CASE INDEX (generated by gen.py) -->"
README_END = "<!-- END CASE INDEX -->"


def update_readme_index(index):
    """Rewrites the case index between the markers in README.md (if present)."""
    path = os.path.join(HERE, "README.md")
    if not os.path.exists(path):
        return
    text = open(path, encoding="utf-8").read()
    if README_BEGIN not in text or README_END not in text:
        return
    rows = ["| # | upstream `It(...)` | Describe / Context | case folder(s) |", "|---|---|---|---|"]
    for i, (ctx, upstream, names) in enumerate(index, 1):
        short = {CTX_MAIN: "Netpol / server and client", CTX_UDP: "Netpol [LinuxOnly] / using UDP",
                 CTX_SCTP: "Netpol [Feature:SCTPConnectivity] / using SCTP"}[ctx]
        rows.append(f"| {i} | {upstream} | {short} | " + "<br>".join(f"`{n}`" for n in names) + " |")
    head, rest = text.split(README_BEGIN, 1)
    _, tail = rest.split(README_END, 1)
    new = head + README_BEGIN + "\n" + "\n".join(rows) + "\n" + README_END + tail
    if new != text:
        with open(path, "w", encoding="utf-8") as f:
            f.write(new)


def main(argv):
    check = "--no-check" not in argv
    generated_header = "# Generated by tests/netpol-e2e/gen.py -- do not edit; edit gen.py and re-run it.\n"

    # remove previously generated case folders (only folders that hold a case.yaml)
    for entry in sorted(os.listdir(HERE)):
        d = os.path.join(HERE, entry)
        if os.path.isdir(d) and os.path.exists(os.path.join(d, "case.yaml")):
            shutil.rmtree(d)

    base_key = ClusterState().key()
    write(os.path.join(HERE, "cluster.yaml"), render_cluster(ClusterState(), generated_header +
          "# The upstream netpol e2e model: namespaces x,y,z with pods a,b,c (see README.md for the IP scheme).\n"))

    folders = []
    index = []  # (context, upstream text, [folder, ...])
    problems = []
    total_probes = 0
    for c in CASES:
        prefix = {CTX_MAIN: "", CTX_UDP: "udp-", CTX_SCTP: "sctp-"}[c["ctx"]]
        base = prefix + kebab(c["text"])
        families = c["families"] or [None]
        index.append((c["ctx"], c["text"], []))
        for family in families:
            k8s = K8s(family or IPV4)
            c["fn"](k8s)
            stages = k8s.stages
            for si, stage in enumerate(stages, 1):
                name = base
                if family:
                    name += "-" + family.lower()
                if len(stages) > 1:
                    name += f"-stage{si}"
                assert name not in folders, name
                folders.append(name)
                index[-1][2].append(name)
                folder = os.path.join(HERE, name)

                # cluster
                if stage["state"].key() == base_key:
                    cluster_rel = "cluster.yaml"
                else:
                    cluster_rel = f"{name}/cluster.yaml"
                    write(os.path.join(HERE, cluster_rel), render_cluster(stage["state"], generated_header +
                          f"# Full replacement for ../cluster.yaml: labels as changed by the upstream test before stage {si}.\n"))

                # policies
                header = (generated_header +
                          f"# upstream: {UPSTREAM_REPO}@{UPSTREAM_COMMIT[:12]} {UPSTREAM_FILE}\n"
                          f"#   {c['ctx'][0]} / {c['ctx'][1]} / It({c['text']!r})\n")
                if stage["policies"]:
                    body = yaml.dump_all([serialize_policy(p) for p in stage["policies"]], Dumper=KubectlDumper,
                                         sort_keys=False, explicit_start=True, default_flow_style=False, width=1000)
                else:
                    body = "# No NetworkPolicy exists at this stage (all were deleted).\napiVersion: v1\nkind: List\nitems: []\n"
                write(os.path.join(folder, "policies.yaml"), header + body)

                # probes
                lines = [header.rstrip("\n"),
                         "# One probe per (from, to) pod pair for every port/protocol the upstream test validates",
                         "# at this stage. Self-probes are always allowed (upstream ignores loopback).",
                         ]
                seen = set()
                loopback_overrides = []
                for (port, proto, raw, final) in stage["validations"]:
                    for frm in all_pod_strings():
                        for to in all_pod_strings():
                            key = (frm, to, proto, port)
                            assert key not in seen, f"duplicate probe {key} in {name}"
                            seen.add(key)
                            allowed = final.Expected[frm][to]
                            if frm == to and not raw.Expected[frm][to]:
                                loopback_overrides.append(f"{frm} {proto}/{port}")
                            fam = f", ipFamily: {family}" if family else ""
                            lines.append(f"- {{from: {frm}, to: {to}, protocol: {proto}, port: {port}, allowed: {'true' if allowed else 'false'}{fam}}}")
                            total_probes += 1
                            if check:
                                for fam_eval in ([family] if family else [IPV4, IPV6]):
                                    got = evaluate(stage["state"], stage["policies"], frm, to, proto, port, fam_eval)
                                    if got != allowed:
                                        problems.append(f"{name}: {frm} -> {to} {proto}/{port} {fam_eval}: "
                                                        f"upstream expects {allowed}, evaluator says {got}")
                write(os.path.join(folder, "probes.yaml"), "\n".join(lines) + "\n")

                # case.yaml
                probed = ", ".join(f"{proto}/{port}" for (port, proto, _, _) in stage["validations"])
                notes = []
                if len(stages) > 1:
                    notes.append(f"Stage {si} of {len(stages)}. State before this stage's ValidateOrFail calls: "
                                 + "; ".join(stage["history"]) + ".")
                notes.append(f"Probed: {probed} (every ordered pair of the 9 pods).")
                if c["notes"]:
                    notes.append(c["notes"])
                if loopback_overrides:
                    notes.append("Upstream's Reachability expects FALSE for the self pairs "
                                 + ", ".join(sorted(set(loopback_overrides)))
                                 + " but never asserts them (ignoreLoopback); here they are allowed.")
                if c["newest_pods"]:
                    notes.append(f"Upstream master later reduced this test to the pods {c['newest_pods']}; "
                                 "its expectations are the restriction of this 3x3 matrix.")
                case_doc = {
                    "upstream": c["text"],
                    "context": f"{c['ctx'][0]} / {c['ctx'][1]}",
                    "cluster": cluster_rel,
                    "notes": " ".join(notes),
                }
                write(os.path.join(folder, "case.yaml"), generated_header + "\n".join(
                    f"{k}: {yaml_str(v)}" for k, v in case_doc.items()) + "\n")

    update_readme_index(index)
    print(f"wrote cluster.yaml and {len(folders)} case folders from {len(CASES)} upstream It() blocks, {total_probes} probes")
    if check:
        if problems:
            print(f"CROSS-CHECK FAILED: {len(problems)} disagreement(s)", file=sys.stderr)
            for p in problems:
                print("  " + p, file=sys.stderr)
            return 1
        print("cross-check: every expectation agrees with the independent evaluator")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
