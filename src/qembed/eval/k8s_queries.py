"""Questions for the mixed Chinese/English Kubernetes retrieval of ``qembed eval zh-report``.

Written for this evaluation (not taken from the corpus): each topic is a question a user
asks, once in Chinese and once in English, and the page(s) of the Kubernetes docs
(``../shared/data/k8s_docs_en_zh``, paths relative to ``content/<lang>/``) that answer it.
Every listed page counts as relevant in BOTH languages: a Chinese question is answered by
the Chinese page and by the English one. The first topic is the source article's own query.
"""

from __future__ import annotations

ARTICLE_QUERY = "如何解决Kubernetes Pod一直处于Pending状态？"

# (topic id, Chinese question, English question, relevant page paths)
TOPICS: tuple[tuple[str, str, str, tuple[str, ...]], ...] = (
    (
        "pending-pod",
        ARTICLE_QUERY,
        "My pod stays in Pending state, how do I debug it?",
        ("docs/tasks/debug/debug-application/debug-pods.md",),
    ),
    (
        "configmap",
        "ConfigMap 是什么？怎么把配置和容器镜像分开？",
        "What is a ConfigMap and how does it decouple configuration from container images?",
        ("docs/concepts/configuration/configmap.md",),
    ),
    (
        "secret",
        "Kubernetes 中如何保存密码、令牌这类敏感信息？",
        "How does Kubernetes store sensitive data such as passwords and tokens?",
        ("docs/concepts/configuration/secret.md",),
    ),
    (
        "probes",
        "怎么给容器配置存活探针和就绪探针？",
        "How do I configure liveness and readiness probes for a container?",
        ("docs/tasks/configure-pod-container/configure-liveness-readiness-startup-probes.md",),
    ),
    (
        "hpa",
        "如何根据 CPU 使用率自动扩缩 Pod 的副本数？",
        "How do I automatically scale the number of pods based on CPU utilization?",
        (
            "docs/tasks/run-application/horizontal-pod-autoscale.md",
            "docs/tasks/run-application/horizontal-pod-autoscale-walkthrough.md",
        ),
    ),
    (
        "taints",
        "污点和容忍度如何阻止 Pod 被调度到某些节点上？",
        "How do taints and tolerations keep pods off certain nodes?",
        ("docs/concepts/scheduling-eviction/taint-and-toleration.md",),
    ),
    (
        "ingress",
        "如何用 Ingress 把集群外部的 HTTP 流量路由到 Service？",
        "How do I route external HTTP traffic to my services with an Ingress?",
        ("docs/concepts/services-networking/ingress.md",),
    ),
    (
        "pv-pvc",
        "PersistentVolume 和 PersistentVolumeClaim 有什么区别？",
        "What is the difference between a PersistentVolume and a PersistentVolumeClaim?",
        ("docs/concepts/storage/persistent-volumes.md",),
    ),
    (
        "statefulset",
        "有状态应用为什么要用 StatefulSet 而不是 Deployment？",
        "When should I use a StatefulSet instead of a Deployment?",
        ("docs/concepts/workloads/controllers/statefulset.md",),
    ),
    (
        "cronjob",
        "如何在 Kubernetes 里定时执行任务？",
        "How can I run a job on a schedule, like cron?",
        (
            "docs/concepts/workloads/controllers/cron-jobs.md",
            "docs/tasks/job/automated-tasks-with-cron-jobs.md",
        ),
    ),
    (
        "network-policy",
        "如何限制 Pod 之间的网络访问？",
        "How do I restrict which pods can talk to each other over the network?",
        (
            "docs/concepts/services-networking/network-policies.md",
            "docs/tasks/administer-cluster/declare-network-policy.md",
        ),
    ),
    (
        "drain",
        "维护节点之前怎样安全地把上面的 Pod 驱逐走？",
        "How do I safely drain a node before maintenance?",
        ("docs/tasks/administer-cluster/safely-drain-node.md",),
    ),
    (
        "quota",
        "如何限制一个名字空间能使用的 CPU 和内存总量？",
        "How can I limit the total CPU and memory a namespace can consume?",
        ("docs/concepts/policy/resource-quotas.md",),
    ),
    (
        "private-registry",
        "怎么从私有镜像仓库拉取镜像？",
        "How do I pull an image from a private registry?",
        ("docs/tasks/configure-pod-container/pull-image-private-registry.md",),
    ),
    (
        "init-containers",
        "Init 容器是什么？它们什么时候运行？",
        "What are init containers and when do they run?",
        ("docs/concepts/workloads/pods/init-containers.md",),
    ),
    (
        "port-forward",
        "如何用 kubectl port-forward 在本机访问集群里的数据库？",
        "How do I use kubectl port-forward to reach a database in the cluster from my laptop?",
        ("docs/tasks/access-application-cluster/port-forward-access-application-cluster.md",),
    ),
    (
        "dns",
        "Service 和 Pod 会得到什么样的 DNS 名称？",
        "What DNS names do Services and Pods get?",
        ("docs/concepts/services-networking/dns-pod-service.md",),
    ),
    (
        "non-root",
        "如何让容器以非 root 用户运行？",
        "How do I run a container as a non-root user?",
        ("docs/tasks/configure-pod-container/security-context.md",),
    ),
    (
        "qos",
        "Guaranteed、Burstable 和 BestEffort 这几种 QoS 类有什么区别？",
        "What is the difference between the Guaranteed, Burstable and BestEffort QoS classes?",
        (
            "docs/concepts/workloads/pods/pod-qos.md",
            "docs/tasks/configure-pod-container/quality-service-pod.md",
        ),
    ),
    (
        "node-pressure",
        "节点内存不足时 kubelet 会怎样驱逐 Pod？",
        "How does the kubelet evict pods when a node runs out of memory?",
        ("docs/concepts/scheduling-eviction/node-pressure-eviction.md",),
    ),
    (
        "debug-service",
        "Service 访问不通，应该怎么排查？",
        "My Service is not reachable; how do I troubleshoot it?",
        ("docs/tasks/debug/debug-application/debug-service.md",),
    ),
    (
        "pdb",
        "如何设置 PodDisruptionBudget，保证自愿干扰期间应用仍然可用？",
        "How do I set a PodDisruptionBudget so my application stays available during voluntary disruptions?",
        ("docs/tasks/run-application/configure-pdb.md", "docs/concepts/workloads/pods/disruptions.md"),
    ),
    (
        "labels",
        "标签和选择算符怎么用？",
        "How do labels and selectors work?",
        ("docs/concepts/overview/working-with-objects/labels.md",),
    ),
    (
        "namespaces",
        "什么时候应该使用多个名字空间？",
        "When should I use multiple namespaces?",
        ("docs/concepts/overview/working-with-objects/namespaces.md",),
    ),
    (
        "daemonset",
        "如何在每个节点上都运行一个日志收集 Pod？",
        "How do I run a log collection pod on every node?",
        ("docs/concepts/workloads/controllers/daemonset.md",),
    ),
    (
        "node-selection",
        "如何把 Pod 调度到带有特定标签的节点上？",
        "How do I schedule a pod onto nodes that have a specific label?",
        (
            "docs/concepts/scheduling-eviction/assign-pod-node.md",
            "docs/tasks/configure-pod-container/assign-pods-nodes.md",
            "docs/tasks/configure-pod-container/assign-pods-nodes-using-node-affinity.md",
        ),
    ),
    (
        "etcd-backup",
        "如何备份和恢复 etcd 集群？",
        "How do I back up and restore an etcd cluster?",
        ("docs/tasks/administer-cluster/configure-upgrade-etcd.md",),
    ),
    (
        "pull-policy",
        "镜像拉取策略 imagePullPolicy 有哪些取值？",
        "What are the possible values of imagePullPolicy?",
        ("docs/concepts/containers/images.md",),
    ),
    (
        "shell",
        "怎样进入正在运行的容器里执行命令？",
        "How do I get a shell inside a running container?",
        ("docs/tasks/debug/debug-application/get-shell-running-container.md",),
    ),
    (
        "rollout",
        "Deployment 如何滚动更新和回滚？",
        "How do I perform a rolling update of a Deployment and roll it back?",
        ("docs/concepts/workloads/controllers/deployment.md",),
    ),
    (
        "storage-class",
        "StorageClass 的作用是什么？怎么动态创建卷？",
        "What is a StorageClass for, and how are volumes provisioned dynamically?",
        ("docs/concepts/storage/storage-classes.md", "docs/concepts/storage/dynamic-provisioning.md"),
    ),
    (
        "pod-security",
        "Pod 安全性标准里的 privileged、baseline 和 restricted 有什么区别？",
        "What are the privileged, baseline and restricted Pod Security Standards?",
        ("docs/concepts/security/pod-security-standards.md",),
    ),
    (
        "job-retries",
        "Job 失败后会重试几次？backoffLimit 怎么设置？",
        "How many times does a Job retry a failed pod, and how do I set backoffLimit?",
        ("docs/concepts/workloads/controllers/job.md",),
    ),
    (
        "node-heartbeat",
        "节点心跳和节点状态是怎么工作的？",
        "How do node heartbeats and node status work?",
        ("docs/concepts/architecture/nodes.md",),
    ),
    (
        "memory-limit",
        "容器超过内存限制会发生什么？",
        "What happens when a container exceeds its memory limit?",
        (
            "docs/tasks/configure-pod-container/assign-memory-resource.md",
            "docs/concepts/configuration/manage-resources-containers.md",
        ),
    ),
    (
        "install-kubectl",
        "如何在 Linux 上安装 kubectl？",
        "How do I install kubectl on Linux?",
        ("docs/tasks/tools/install-kubectl-linux.md",),
    ),
    (
        "kubeconfig",
        "如何用 kubeconfig 在多个集群之间切换？",
        "How do I switch between several clusters with kubeconfig contexts?",
        (
            "docs/concepts/configuration/organize-cluster-access-kubeconfig.md",
            "docs/tasks/access-application-cluster/configure-access-multiple-clusters.md",
        ),
    ),
    (
        "service-types",
        "ClusterIP、NodePort 和 LoadBalancer 这几种 Service 类型有什么不同？",
        "What is the difference between the ClusterIP, NodePort and LoadBalancer Service types?",
        ("docs/concepts/services-networking/service.md",),
    ),
    (
        "preemption",
        "高优先级的 Pod 是如何抢占低优先级 Pod 的？",
        "How do higher-priority pods preempt lower-priority ones?",
        ("docs/concepts/scheduling-eviction/pod-priority-preemption.md",),
    ),
    (
        "lifecycle-hooks",
        "容器的 PostStart 和 PreStop 回调怎么用？",
        "How do the PostStart and PreStop container hooks work?",
        (
            "docs/concepts/containers/container-lifecycle-hooks.md",
            "docs/tasks/configure-pod-container/attach-handler-lifecycle-event.md",
        ),
    ),
)
