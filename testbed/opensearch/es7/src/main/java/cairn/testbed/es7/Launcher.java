package cairn.testbed.es7;

import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.Paths;
import java.util.ArrayList;
import java.util.Collection;
import java.util.Collections;
import java.util.List;
import java.util.concurrent.CountDownLatch;

import org.elasticsearch.Version;
import org.elasticsearch.common.logging.LogConfigurator;
import org.elasticsearch.common.settings.Settings;
import org.elasticsearch.env.Environment;
import org.elasticsearch.node.InternalSettingsPreparer;
import org.elasticsearch.node.Node;
import org.elasticsearch.plugins.Plugin;
import org.elasticsearch.transport.Netty4Plugin;

/**
 * Starts one Elasticsearch node in this JVM, for tests: the server jar and the HTTP transport module
 * from Maven Central on the classpath, loaded as classpath plugins (no plugins directory, no
 * bootstrap checks, no security manager), single-node discovery on 127.0.0.1.
 *
 * <pre>
 * java -Xmx512m -cp 'lib/*:classes' cairn.testbed.es7.Launcher --home DIR --http-port N
 *      [--transport-port N] [--repo DIR] [-Ekey=value ...]
 * </pre>
 *
 * The home directory gets {@code config/} (with a console log4j2 configuration), {@code data/},
 * {@code logs/} and, unless --repo is given, {@code repo/} (the {@code path.repo} for snapshot
 * repositories). Logs go to stdout. SIGTERM closes the node cleanly; SIGKILL is fine too.
 */
public final class Launcher {
    private static final String LOG4J2 = String.join("\n",
        "status = error",
        "appender.console.type = Console",
        "appender.console.name = console",
        "appender.console.layout.type = PatternLayout",
        "appender.console.layout.pattern = [%d{ISO8601}][%-5p][%-25c{1.}] [%node_name]%marker %m%n",
        "rootLogger.level = ${sys:cairn.log.level:-info}",
        "rootLogger.appenderRef.console.ref = console",
        "");

    /** Node's constructor taking classpath plugins is protected. */
    static final class ClasspathPluginsNode extends Node {
        ClasspathPluginsNode(Environment environment, Collection<Class<? extends Plugin>> plugins) {
            super(environment, plugins, true);
        }
    }

    public static void main(String[] args) throws Exception {
        Path home = null;
        Path repo = null;
        String httpPort = null;
        String transportPort = null;
        List<String> extra = new ArrayList<>();
        for (int i = 0; i < args.length; i++) {
            String arg = args[i];
            switch (arg) {
                case "--home" -> home = Paths.get(value(args, ++i, arg));
                case "--repo" -> repo = Paths.get(value(args, ++i, arg));
                case "--http-port" -> httpPort = value(args, ++i, arg);
                case "--transport-port" -> transportPort = value(args, ++i, arg);
                case "--version" -> {
                    System.out.println("Elasticsearch " + Version.CURRENT);
                    return;
                }
                default -> {
                    if (arg.startsWith("-E") && arg.contains("=")) {
                        extra.add(arg.substring(2));
                    } else {
                        usage("unknown argument " + arg);
                    }
                }
            }
        }
        if (home == null || httpPort == null) {
            usage("--home and --http-port are required");
        }
        home = home.toAbsolutePath();
        if (repo == null) {
            repo = home.resolve("repo");
        }
        Path config = home.resolve("config");
        Files.createDirectories(config);
        Files.createDirectories(home.resolve("data"));
        Files.createDirectories(home.resolve("logs"));
        Files.createDirectories(repo);
        Path log4j2 = config.resolve("log4j2.properties");
        if (!Files.exists(log4j2)) {
            Files.write(log4j2, LOG4J2.getBytes(StandardCharsets.UTF_8));
        }

        Settings.Builder settings = Settings.builder()
            .put("cluster.name", "cairn-testbed")
            .put("node.name", "cairn-testbed-0")
            .put("path.home", home.toString())
            .put("path.data", home.resolve("data").toString())
            .put("path.logs", home.resolve("logs").toString())
            .putList("path.repo", repo.toAbsolutePath().toString())
            .put("discovery.type", "single-node")
            .put("network.host", "127.0.0.1")
            .put("http.port", httpPort)
            .put("transport.port", transportPort != null ? transportPort : "0")
            // A test machine's disk may be fuller than the default watermarks allow.
            .put("cluster.routing.allocation.disk.threshold_enabled", false)
            .put("action.auto_create_index", true);
        for (String kv : extra) {
            int eq = kv.indexOf('=');
            settings.put(kv.substring(0, eq), kv.substring(eq + 1));
        }

        Environment environment = InternalSettingsPreparer.prepareEnvironment(
            settings.build(), Collections.emptyMap(), config, () -> "cairn-testbed-0");
        LogConfigurator.registerErrorListener();
        LogConfigurator.setNodeName(Node.NODE_NAME_SETTING.get(environment.settings()));
        LogConfigurator.configure(environment);

        long started = System.nanoTime();
        Node node = new ClasspathPluginsNode(environment, List.of(Netty4Plugin.class));
        CountDownLatch closed = new CountDownLatch(1);
        Runtime.getRuntime().addShutdownHook(new Thread(() -> {
            try {
                node.close();
            } catch (Exception e) {
                e.printStackTrace();
            } finally {
                closed.countDown();
            }
        }, "cairn-launcher-shutdown"));
        node.start();
        System.out.printf("cairn-launcher: Elasticsearch %s started in %d ms, http://127.0.0.1:%s%n",
            Version.CURRENT, (System.nanoTime() - started) / 1_000_000, httpPort);
        System.out.flush();
        closed.await();
    }

    private static String value(String[] args, int i, String flag) {
        if (i >= args.length) {
            usage(flag + " needs a value");
        }
        return args[i];
    }

    private static void usage(String problem) {
        System.err.println("cairn-launcher: " + problem);
        System.err.println("usage: Launcher --home DIR --http-port N [--transport-port N] [--repo DIR] [-Ekey=value ...]");
        System.exit(2);
    }
}
