// docker/k8s/ cannot be applied here (no cluster). Every object is validated against Kubernetes'
// own OpenAPI schemas (the kubernetes-models package bundles them, compiled), the kustomization is
// checked against the files beside it, the embedded gateway config passes `portcullis check-config`,
// and the manifests agree with it and with the gateway's shutdown timings.
import t from 'tap'
import { readdir, readFile, writeFile } from 'node:fs/promises'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { basename, dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { parseAllDocuments, parse } from 'yaml'
import { Deployment } from 'kubernetes-models/apps/v1/Deployment'
import { ConfigMap } from 'kubernetes-models/v1/ConfigMap'
import { Service } from 'kubernetes-models/v1/Service'
import { ServiceAccount } from 'kubernetes-models/v1/ServiceAccount'
import { PodDisruptionBudget } from 'kubernetes-models/policy/v1/PodDisruptionBudget'
import { NetworkPolicy } from 'kubernetes-models/networking.k8s.io/v1/NetworkPolicy'
import { DEFAULT_UPLOAD_WAIT_MS, parseConfig } from '@portcullis/core'
import { SHUTDOWN_GRACE_MS } from '../src/gateway.ts'
import { portcullis } from './helpers.ts'

const K8S = join(dirname(fileURLToPath(import.meta.url)), '../../../docker/k8s')

// kind → the model whose validate() runs Kubernetes' schema for it
const MODELS: Record<string, { apiVersion: string; make(o: object): { validate(): void } }> = {
  Deployment: { apiVersion: 'apps/v1', make: (o) => new Deployment(o as never) },
  ConfigMap: { apiVersion: 'v1', make: (o) => new ConfigMap(o as never) },
  Service: { apiVersion: 'v1', make: (o) => new Service(o as never) },
  ServiceAccount: { apiVersion: 'v1', make: (o) => new ServiceAccount(o as never) },
  PodDisruptionBudget: { apiVersion: 'policy/v1', make: (o) => new PodDisruptionBudget(o as never) },
  NetworkPolicy: { apiVersion: 'networking.k8s.io/v1', make: (o) => new NetworkPolicy(o as never) },
}

type Obj = Record<string, any>

async function load(): Promise<{ kustomization: Obj; objects: Obj[] }> {
  const kustomization = parse(await readFile(join(K8S, 'kustomization.yaml'), 'utf8')) as Obj
  const objects: Obj[] = []
  for (const file of kustomization.resources as string[]) {
    for (const doc of parseAllDocuments(await readFile(join(K8S, file), 'utf8'))) {
      if (doc.errors.length > 0) throw new Error(`${file}: ${doc.errors[0]!.message}`)
      objects.push({ ...(doc.toJS() as Obj), __file: file })
    }
  }
  return { kustomization, objects }
}

const byKind = (objects: Obj[], kind: string) => objects.filter((o) => o.kind === kind)
const matches = (selector: Record<string, string>, labels: Record<string, string>) =>
  Object.entries(selector).every(([k, v]) => labels[k] === v)

t.test('the kustomization lists every manifest beside it, and nothing else', async (t) => {
  const { kustomization } = await load()
  t.equal(kustomization.apiVersion, 'kustomize.config.k8s.io/v1beta1')
  t.equal(kustomization.kind, 'Kustomization')
  const files = (await readdir(K8S)).filter((f) => f.endsWith('.yaml') && f !== 'kustomization.yaml').sort()
  t.same([...kustomization.resources].sort(), files)
  t.match(kustomization.images, [{ name: 'portcullis' }], 'an overlay sets the image by its name')
})

t.test("every object is valid by Kubernetes' schema for its kind", async (t) => {
  const { objects } = await load()
  t.ok(objects.length >= 8)
  for (const o of objects) {
    const { __file, ...obj } = o
    const model = MODELS[obj.kind]
    t.ok(model, `${__file}: ${obj.kind} is a kind this base is checked for`)
    if (!model) continue
    t.equal(obj.apiVersion, model.apiVersion, `${__file}: ${obj.kind} apiVersion`)
    t.doesNotThrow(() => model.make(obj).validate(), `${__file}: ${obj.kind}/${obj.metadata?.name}`)
  }
  // the validator does refuse what the schema refuses
  const bad = structuredClone(byKind(objects, 'Deployment')[0]!)
  delete bad.__file
  bad.spec.template.spec.containers[0].ports[0].containerPort = 'fifteen'
  t.throws(() => new Deployment(bad).validate(), /containerPort must be integer/)
})

t.test('no Secret values in the base: the pods reference a Secret made elsewhere', async (t) => {
  const { objects } = await load()
  t.same(byKind(objects, 'Secret'), [])
  const pod = byKind(objects, 'Deployment')[0]!.spec.template.spec
  const vol = pod.volumes.find((v: Obj) => v.secret)
  t.equal(vol.secret.secretName, 'portcullis')
  for (const c of pod.containers) for (const e of c.env ?? []) t.notOk('value' in e && /key|pass|secret|token/i.test(e.name), `${e.name} is not a literal`)
})

t.test('the Deployment: 3 replicas, non-root, read-only root, bounded, probed on the admin /healthz, drained in its grace period', async (t) => {
  const { objects } = await load()
  const config = parseConfig(byKind(objects, 'ConfigMap')[0]!.data['portcullis.yaml'], 'configmap.yaml')
  const d = byKind(objects, 'Deployment')[0]!
  t.equal(d.spec.replicas, 3)
  const pod = d.spec.template.spec
  t.equal(pod.securityContext.runAsNonRoot, true)
  t.not(pod.securityContext.runAsUser, 0)
  t.equal(pod.automountServiceAccountToken, false)
  const [c] = pod.containers
  t.equal(c.securityContext.readOnlyRootFilesystem, true)
  t.equal(c.securityContext.allowPrivilegeEscalation, false)
  t.same(c.securityContext.capabilities.drop, ['ALL'])
  for (const r of ['cpu', 'memory']) {
    t.ok(c.resources.requests[r], `requests.${r}`)
    t.ok(c.resources.limits[r], `limits.${r}`)
  }
  const portOf = (name: string | number) => (typeof name === 'number' ? name : c.ports.find((p: Obj) => p.name === name)?.containerPort)
  const adminPort = Number(config.admin!.listen.split(':').pop())
  for (const probe of [c.livenessProbe, c.readinessProbe]) {
    t.equal(probe.httpGet.path, '/healthz')
    t.equal(portOf(probe.httpGet.port), adminPort, "the probe reaches the config's admin listener")
  }
  // the config it runs is the ConfigMap, and what it writes lies on a writable volume
  const at = c.args.indexOf('--config')
  const mounts = Object.fromEntries(c.volumeMounts.map((m: Obj) => [m.name, m]))
  t.equal(dirname(c.args[at + 1]), mounts.config.mountPath)
  t.equal(pod.volumes.find((v: Obj) => v.name === 'config').configMap.name, byKind(objects, 'ConfigMap')[0]!.metadata.name)
  t.ok(c.volumeMounts.some((m: Obj) => m.mountPath === config.recording.dir && !m.readOnly), 'recording.dir is a writable volume')
  t.ok(c.volumeMounts.some((m: Obj) => m.mountPath === '/tmp' && !m.readOnly), '/tmp is writable (tsx cache, verify downloads)')
  // every file secret the config reads is a key the Secret volume provides
  const secretMount = mounts[pod.volumes.find((v: Obj) => v.secret).name].mountPath
  const items = pod.volumes.find((v: Obj) => v.secret).secret.items.map((i: Obj) => i.path)
  for (const [name, s] of Object.entries(config.secrets)) {
    t.ok('file' in s, `secret ${name} is read from a file`)
    if ('file' in s) {
      t.equal(dirname(s.file), secretMount, `secret ${name} lies in the Secret mount`)
      t.ok(items.includes(basename(s.file)), `secret ${name} is an item of the Secret volume`)
    }
  }
  // grace: preStop pause + the drain deadline + abort/close grace + upload wait, and not much more
  const sleep = Number(c.lifecycle.preStop.exec.command[1])
  const deadline = Number(c.args[c.args.indexOf('--shutdown-deadline') + 1])
  const needed = sleep + (deadline + SHUTDOWN_GRACE_MS + DEFAULT_UPLOAD_WAIT_MS) / 1000
  t.ok(pod.terminationGracePeriodSeconds >= needed, `grace ${pod.terminationGracePeriodSeconds}s covers ${needed}s`)
  t.ok(pod.terminationGracePeriodSeconds <= needed + 5, 'and matches it (within 5 s)')
})

t.test('a Service per target port, a PodDisruptionBudget and a NetworkPolicy that select the pods and let the targets in', async (t) => {
  const { objects } = await load()
  const config = parseConfig(byKind(objects, 'ConfigMap')[0]!.data['portcullis.yaml'], 'configmap.yaml')
  const d = byKind(objects, 'Deployment')[0]!
  const labels = d.spec.template.metadata.labels
  t.ok(matches(d.spec.selector.matchLabels, labels))
  const [c] = d.spec.template.spec.containers
  const portOf = (name: string | number) => (typeof name === 'number' ? name : c.ports.find((p: Obj) => p.name === name)?.containerPort)
  const services = byKind(objects, 'Service')
  for (const s of services) t.ok(matches(s.spec.selector, labels), `${s.metadata.name} selects the pods`)
  for (const target of config.targets) {
    const port = Number(target.listen.split(':').pop())
    const serving = services.filter((s) => s.spec.ports.some((p: Obj) => portOf(p.targetPort) === port))
    t.equal(serving.length, 1, `one Service for target ${target.name} (${port})`)
    t.equal(serving[0]?.spec.ports.length, 1, 'and only that port')
  }
  const [pdb] = byKind(objects, 'PodDisruptionBudget')
  t.ok(matches(pdb!.spec.selector.matchLabels, labels))
  t.ok(pdb!.spec.maxUnavailable === 1 || pdb!.spec.minAvailable === 2)
  const [np] = byKind(objects, 'NetworkPolicy')
  t.ok(matches(np!.spec.podSelector.matchLabels, labels))
  t.same(np!.spec.policyTypes, ['Ingress', 'Egress'])
  const open = np!.spec.ingress.flatMap((r: Obj) => r.ports.map((p: Obj) => p.port))
  for (const target of config.targets) t.ok(open.includes(Number(target.listen.split(':').pop())), `ingress to ${target.name}`)
  t.ok(open.includes(Number(config.admin!.listen.split(':').pop())), 'ingress to the admin listener')
})

t.test("the ConfigMap's gateway config passes check-config and uploads recordings to S3", async (t) => {
  const { objects } = await load()
  const text = byKind(objects, 'ConfigMap')[0]!.data['portcullis.yaml'] as string
  const dir = await mkdtemp(join(tmpdir(), 'portcullis-k8s-'))
  t.teardown(() => rm(dir, { recursive: true, force: true }))
  const file = join(dir, 'portcullis.yaml')
  await writeFile(file, text)
  const r = await portcullis(['check-config', file])
  t.equal(r.code, 0, r.stdout + r.stderr)
  t.match(r.stdout, /: ok \(3 targets/)
  const config = parseConfig(text, 'configmap.yaml')
  t.match(config.recording.upload, { s3: { bucket: 'portcullis-recordings', accessKeyId: { secret: 's3-key' } } })
})
